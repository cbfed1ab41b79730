// What the box dashboard (app.js) and the fleet dashboard (fleet.js) share: the element
// lookup, the token (from ?token=, kept in localStorage, added to every request), the
// connection badge and the token dialog. An ES module: no build step, nothing global.

export const $ = (sel) => document.querySelector(sel);

// The access token of one dashboard, kept under `key` in localStorage. A `?token=` in the
// page's address replaces it (a link from the fleet view or a bookmark carries it).
export function tokenStore(key) {
  const fromUrl = new URLSearchParams(location.search).get("token");
  if (fromUrl) localStorage.setItem(key, fromUrl);
  let token = localStorage.getItem(key) || "";
  return {
    get: () => token,
    set(value) {
      token = value.trim();
      localStorage.setItem(key, token);
    },
    // `url` with the token as a query parameter (browsers cannot set headers on a WebSocket).
    withToken: (url) =>
      token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url,
  };
}

// The connection badge: `state` is connecting, live, reconnecting or auth (the CSS colours it).
export function setConn(state, text) {
  const el = $("#conn");
  el.dataset.state = state;
  el.textContent = text;
}

// The token dialog (#token-btn opens it): `open()` shows it with the current token; a new
// token entered and confirmed is stored and `changed()` called.
export function tokenDialog(store, changed) {
  const dialog = $("#token-dialog");
  const open = () => {
    $("#token-input").value = store.get();
    if (!dialog.open) dialog.showModal();
  };
  $("#token-btn").addEventListener("click", open);
  dialog.addEventListener("close", () => {
    if (dialog.returnValue !== "ok") return;
    store.set($("#token-input").value);
    changed();
  });
  return open;
}
