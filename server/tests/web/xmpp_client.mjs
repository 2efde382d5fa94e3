// A browser-style client (@xmpp/client over WebSocket, RFC 7395) against
// tern-server: logs in, sends an OMEMO-style encrypted message to a peer
// and waits for the peer's encrypted answer.
//
// Usage: node xmpp_client.mjs WSS_URL DOMAIN USER PASSWORD PEER_JID MARKER
// (NODE_EXTRA_CA_CERTS names the test CA). Prints "all steps passed".

import { client, xml } from "@xmpp/client";
import { WebSocket } from "ws";

// Node.js 20 has no WebSocket of its own.
globalThis.WebSocket ??= WebSocket;

const [service, domain, username, password, peer, marker] = process.argv.slice(2);
const OMEMO = "eu.siacs.conversations.axolotl";

function encrypted(payload) {
  return xml("encrypted", { xmlns: OMEMO },
    xml("header", { sid: "1" }, xml("key", { rid: "2" }, "AAAA"), xml("iv", {}, "AAAAAAAAAAAAAAAA")),
    xml("payload", {}, payload));
}

const deadline = setTimeout(() => {
  console.error("timed out");
  process.exit(1);
}, 40000);

const xmpp = client({ service, domain, username, password, resource: "node" });
xmpp.on("error", (e) => console.error("client error:", e.message));

xmpp.on("stanza", async (stanza) => {
  if (!stanza.is("message")) return;
  if (stanza.attrs.type === "error") {
    console.error("message error:", stanza.toString());
    process.exit(1);
  }
  const payload = stanza.getChild("encrypted", OMEMO)?.getChildText("payload");
  if (stanza.attrs.from?.startsWith(peer) && payload === `${marker}-reply`) {
    console.log("ok - the slixmpp user's encrypted answer arrived over WebSocket");
    clearTimeout(deadline);
    await xmpp.stop();
    console.log("all steps passed");
    process.exit(0);
  }
});

xmpp.on("online", async (address) => {
  console.log(`ok - logged in over WebSocket as ${address}`);
  await xmpp.send(xml("presence"));
  await xmpp.send(xml("message", { to: peer, type: "chat", id: "ws-1" },
    xml("body", {}, "I sent you an OMEMO encrypted message."), encrypted(marker)));
  console.log("ok - sent an encrypted message");
});

xmpp.start().catch((e) => {
  console.error("cannot start:", e.message);
  process.exit(1);
});
