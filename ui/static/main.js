// Loads Hearth's UI (Rust compiled to WebAssembly). An external module, not an inline
// script, so the strict CSP needs no 'unsafe-inline'.
import init from "./hearth_ui.js";
init({ module_or_path: new URL("./hearth_ui_bg.wasm", import.meta.url) }).catch((e) => {
  const p = document.createElement("p");
  p.setAttribute("role", "alert");
  p.textContent = "Hearth's window failed to load (" + e + "). Please restart Hearth; " +
    "if this persists, tell your IT team.";
  document.body.append(p);
});
