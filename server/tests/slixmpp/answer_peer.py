"""A slixmpp user that answers the first encrypted message carrying
MARKER with one carrying MARKER-reply (the peer of the WebSocket and
browser client tests).

Usage: answer_peer.py HOST PORT CA_FILE JID PASSWORD MARKER
"""

import asyncio
import sys

from clients import Client, run, step

HOST, PORT, CA_FILE, JID, PASSWORD, MARKER = sys.argv[1:7]


async def main():
    peer = Client(JID, PASSWORD, HOST, PORT, CA_FILE)
    await peer.start()
    print("ready", flush=True)
    while True:
        message = await asyncio.wait_for(peer.messages.get(), 60)
        if MARKER in str(message):
            break
    step(f"got the encrypted message from {message['from']}")
    peer.send_encrypted(message["from"].bare, f"{MARKER}-reply")
    await asyncio.sleep(0.5)
    await peer.stop()


if __name__ == "__main__":
    run(main)
