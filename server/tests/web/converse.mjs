// Converse.js, a browser XMPP client, in Debian's headless Chromium
// (driven by playwright-core) against tern-server over WebSocket: it logs
// in, a message sent to it is shown, and a screenshot of the chat is
// saved.
//
// Usage: node converse.mjs WSS_URL JID PASSWORD FROM_JID SCREENSHOT
// Prints "ready" once logged in, then waits (bounded) for a message
// from FROM_JID to be shown; prints "all steps passed".

import http from "node:http";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const [websocketUrl, jid, password, from, screenshot] = process.argv.slice(2);
const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(here, "node_modules/converse.js/dist");

const deadline = setTimeout(() => {
  console.error("timed out");
  process.exit(1);
}, 90000);

const page = `<!doctype html>
<html><head><meta charset="utf-8"><title>Tern - Converse.js</title>
<link rel="stylesheet" href="/dist/converse.min.css">
<script src="/dist/converse.min.js"></script></head>
<body class="converse-fullscreen">
<script>
converse.initialize({
  websocket_url: ${JSON.stringify(websocketUrl)},
  jid: ${JSON.stringify(jid)},
  password: ${JSON.stringify(password)},
  auto_login: true,
  discover_connection_methods: false,
  view_mode: "fullscreen",
  assets_path: "/dist/",
  allow_non_roster_messaging: true,
  show_controlbox_by_default: true,
  play_sounds: false,
  show_desktop_notifications: false,
});
</script></body></html>`;

const types = { ".js": "text/javascript", ".css": "text/css", ".json": "application/json",
  ".svg": "image/svg+xml", ".woff2": "font/woff2", ".woff": "font/woff", ".ttf": "font/ttf",
  ".png": "image/png", ".mp3": "audio/mpeg", ".ogg": "audio/ogg" };

const server = http.createServer((request, response) => {
  const url = new URL(request.url, "http://localhost");
  if (url.pathname === "/" || url.pathname === "/index.html") {
    response.writeHead(200, { "content-type": "text/html" });
    return response.end(page);
  }
  const file = path.normalize(path.join(dist, url.pathname.replace(/^\/dist\//, "")));
  if (!file.startsWith(dist) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
    response.writeHead(404);
    return response.end();
  }
  response.writeHead(200, { "content-type": types[path.extname(file)] ?? "application/octet-stream" });
  fs.createReadStream(file).pipe(response);
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const address = `http://127.0.0.1:${server.address().port}/`;

const profile = fs.mkdtempSync(path.join(os.tmpdir(), "tern-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  ignoreHTTPSErrors: true,
  viewport: { width: 1100, height: 700 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--ignore-certificate-errors"],
});

async function finish(code) {
  clearTimeout(deadline);
  await context.close().catch(() => {});
  server.close();
  fs.rmSync(profile, { recursive: true, force: true });
  process.exit(code);
}

try {
  const tab = context.pages()[0] ?? (await context.newPage());
  tab.on("console", (m) => { if (m.type() === "error") console.error("page:", m.text()); });
  await tab.goto(address);
  await tab.waitForSelector("converse-roster, .controlbox-section", { timeout: 45000 });
  console.log("ok - Converse.js logged in over WebSocket");
  console.log("ready");
  const bare = from.split("/")[0];
  // The roster shows the unread message; open that chat.
  await tab.locator(".roster-item, converse-roster-contact").filter({ hasText: bare }).first()
    .locator("a").first().click({ timeout: 45000 });
  const shown = tab.locator(`converse-chat-message, .chat-msg`).filter({ hasText: /encrypted|OMEMO/i });
  await shown.first().waitFor({ timeout: 45000 });
  const chats = await tab.locator(`[data-jid="${bare}"], converse-chat`).count();
  console.log(`ok - the message from ${bare} is shown (${chats} chat view(s))`);
  fs.mkdirSync(path.dirname(screenshot), { recursive: true });
  await tab.screenshot({ path: screenshot, fullPage: false });
  console.log(`ok - screenshot saved to ${screenshot}`);
  console.log("all steps passed");
  await finish(0);
} catch (e) {
  console.error("failed:", e.message);
  try {
    const tab = context.pages()[0];
    if (tab) {
      fs.mkdirSync(path.dirname(screenshot), { recursive: true });
      await tab.screenshot({ path: screenshot.replace(/\.png$/, "-failed.png") });
    }
  } catch {}
  await finish(1);
}
