// What the pages share of talking to the server's HTTP API.

/** An answer that was not a success: its status and the server's reason. */
export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The error for a failed answer: the server's `{"error": ...}`, else the status. */
export async function failure(res) {
  let message = `HTTP ${res.status}`;
  try {
    message = (await res.json()).error ?? message;
  } catch {
    // Not JSON (a proxy's page): the status says enough.
  }
  return new HttpError(res.status, message);
}
