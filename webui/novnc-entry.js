// noVNC's RFB client as one ES module for the console page: npm ships noVNC
// as CommonJS only, which a browser cannot load as it is.
export { default } from "@novnc/novnc/lib/rfb.js";
