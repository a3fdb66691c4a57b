// The console page: noVNC's RFB client on the engine's console proxy, with
// the one-time VNC password the page was given (then dropped from the page).
import RFB from "./vendor/novnc-rfb.js";

const screen = document.getElementById("screen");
const status = document.getElementById("console-status");
const password = screen.dataset.password;
delete screen.dataset.password;

function show(text, state) {
  status.textContent = text;
  screen.dataset.state = state;
}

const rfb = new RFB(screen, screen.dataset.url, { credentials: { password } });
rfb.scaleViewport = true;
rfb.addEventListener("connect", () => show("Connected", "connected"));
rfb.addEventListener("disconnect", (e) =>
  show(e.detail.clean ? "Disconnected" : "Connection lost (the ticket may have expired: open the console again)",
       "disconnected"));
rfb.addEventListener("securityfailure", (e) =>
  show("Refused: " + (e.detail.reason || "the one-time password was not accepted"), "refused"));
document.getElementById("console-cad").addEventListener("click", () => rfb.sendCtrlAltDel());
