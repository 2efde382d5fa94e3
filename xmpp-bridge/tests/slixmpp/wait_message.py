"""A client of the bridge that logs in, says so, and waits for a chat
message with a given body.

Usage: wait_message.py HOST PORT JID PASSWORD CERT BODY
"""

import asyncio
import logging
import sys

from recorder import RecordingClient, step

HOST, PORT, JID, PASSWORD, CERT, BODY = sys.argv[1:7]


async def main():
    client = RecordingClient(JID, PASSWORD, CERT)
    await client.start(HOST, PORT)
    step("ready")
    await client.wait_for(f"a message saying {BODY!r}", lambda s: s.name == "message" and s["body"] == BODY)
    step("the message arrived")
    client.disconnect()
    await client.disconnected


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(asyncio.wait_for(main(), 150))
    print("all steps passed")
