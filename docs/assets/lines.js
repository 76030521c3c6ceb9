// Source pages (code/…/file.py/#L10-L40): highlight the linked line range and scroll to it.
function fsxHighlightLines() {
  const m = /^#L(\d+)(?:-L(\d+))?$/.exec(location.hash);
  document.querySelectorAll(".fsx-hl").forEach(e => e.classList.remove("fsx-hl"));
  if (!m) return;
  const first = +m[1], last = +(m[2] || m[1]);
  for (let n = first; n <= last; n++) {
    const line = document.getElementById("L" + n);
    if (line) line.classList.add("fsx-hl");
  }
  const top = document.getElementById("L" + first);
  if (top) top.scrollIntoView({block: "center"});
}
window.addEventListener("hashchange", fsxHighlightLines);
document.addEventListener("DOMContentLoaded", fsxHighlightLines);
