// How much memory the page offers for panels kept between tiles (#14). On a slow link a tile
// is bound by the bytes it moves, and a larger cache moves fewer of them (the server plans
// each page's cache from what it announces, server/src/panels.rs). The offer follows what the
// browser says the device has (`navigator.deviceMemory`, in GiB, rounded and capped by the
// browser; absent outside Chromium): by default a sixteenth of it, at most a quarter, within
// 64 MiB and 1 GiB. Pure, so it is unit-tested in Node.

export const MIB = 1024 * 1024;

/** The sizes a volunteer can pick, in MiB. */
export const CACHE_CHOICES_MIB = [64, 128, 256, 512, 1024];

/** Without a figure from the browser: a modest default, and no more than a phone could give. */
const UNKNOWN = { defaultMib: 128, maxMib: 256 };

/**
 * `{ choices, defaultMib }` for a device with `deviceMemory` GiB (or none known): the choices
 * this device can afford, and the one offered when the volunteer has not picked one.
 */
export function affordableCache(deviceMemory) {
  const known = Number.isFinite(deviceMemory) && deviceMemory > 0;
  const maxMib = known ? (deviceMemory * 1024) / 4 : UNKNOWN.maxMib;
  const wantMib = known ? (deviceMemory * 1024) / 16 : UNKNOWN.defaultMib;
  const choices = CACHE_CHOICES_MIB.filter((c) => c <= maxMib);
  if (choices.length === 0) choices.push(CACHE_CHOICES_MIB[0]);
  const defaultMib = choices.filter((c) => c <= wantMib).at(-1) ?? choices[0];
  return { choices, defaultMib };
}

/** A stored choice, if it is still one this device offers; else the device's default. */
export function chosenCacheMib(stored, afford) {
  const n = Number(stored);
  return afford.choices.includes(n) ? n : afford.defaultMib;
}
