// The orchestrator's HTTP API as the dashboard uses it. The API token (when the server has
// one) is entered once and kept in sessionStorage: it lasts the tab, not the machine. It is
// kept under the origin of the server it was entered for, and an `Api` reads only its own
// server's token: a page pointed at another server never sends it the first one's.

import { loadApiToken, saveApiToken } from "../common/settings.js";
import { HttpError, failure } from "../common/http.js";

/** A failed answer (`status`, the server's reason as `message`). */
export { HttpError as ApiError };

export class Api {
  constructor(base) {
    this.base = base;
  }

  /** The token entered for this server (this `base`), never another server's. */
  get token() {
    return loadApiToken(this.base);
  }

  set token(value) {
    saveApiToken(this.base, value);
  }

  async request(path, { method = "GET", body, auth = false, raw = false } = {}) {
    const headers = {};
    if (auth && this.token) headers.Authorization = `Bearer ${this.token}`;
    if (body && !(body instanceof FormData)) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(body);
    }
    // A request that carries the token does not follow redirects: a redirect could lead it
    // to another origin (browsers drop the header there, but older ones did not).
    const redirect = headers.Authorization ? "error" : "follow";
    const res = await fetch(this.base + path, { method, headers, body, redirect });
    if (!res.ok) throw await failure(res);
    if (raw) return res;
    return res.status === 204 ? null : res.json();
  }

  jobs() {
    return this.request("/api/jobs");
  }

  job(id) {
    return this.request(`/api/jobs/${encodeURIComponent(id)}`);
  }

  tiles(id) {
    return this.request(`/api/jobs/${encodeURIComponent(id)}/tiles`);
  }

  workers() {
    return this.request("/api/workers");
  }

  submit(form) {
    return this.request("/api/jobs", { method: "POST", body: form, auth: true });
  }

  cancel(id) {
    return this.request(`/api/jobs/${encodeURIComponent(id)}`, { method: "DELETE", auth: true });
  }

  async result(id) {
    const res = await this.request(`/api/jobs/${encodeURIComponent(id)}/result`, { auth: true, raw: true });
    return res.blob();
  }
}
