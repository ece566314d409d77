/* Times, durations and sizes the page writes itself.
 *
 * Results carry `timestamp_formatted` for every highlight and step, and the page
 * shows those strings as they are. The server sends no formatted time for the
 * video's length, the timeline's scale or the rows of every analyzed segment,
 * so this one formatter writes them the way the server writes its own
 * (video/timecode.py: Timecode.clock, format_range).
 */

function pad(n) {
  return (n < 10 ? "0" : "") + n;
}

/* MM:SS, or H:MM:SS from one hour on (or when asked). */
export function clock(seconds, withHours = false) {
  const total = Math.max(0, Math.floor(Number(seconds) || 0));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  return h > 0 || withHours ? h + ":" + pad(m) + ":" + pad(s) : pad(m) + ":" + pad(s);
}

/* MM:SS-MM:SS; both ends H:MM:SS once the range reaches an hour. */
export function clockRange(start, end) {
  const withHours = Number(end) >= 3600;
  return clock(start, withHours) + "-" + clock(end, withHours);
}

/* "2 s", "2.5 s": a duration in seconds, to a tenth. */
export function seconds(value) {
  const n = Number(value) || 0;
  return (Math.round(n * 10) / 10).toString().replace(/\.0$/, "") + "\u00a0s";
}

export function bytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1024 * 1024) return (n / 1024).toFixed(0) + " KB";
  if (n < 1024 * 1024 * 1024) return (n / 1024 / 1024).toFixed(1) + " MB";
  return (n / 1024 / 1024 / 1024).toFixed(2) + " GB";
}
