// The printable report's Print button (a file, not an inline handler: the CSP allows no inline
// script).
document.getElementById("print-btn")?.addEventListener("click", () => window.print());
