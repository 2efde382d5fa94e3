"""Logs in, sends one OMEMO-style encrypted message to a JID, and logs
out (the sender of the browser client test).

Usage: send_encrypted.py HOST PORT CA_FILE JID PASSWORD TO PAYLOAD
"""

import asyncio
import sys

from clients import Client, run, step

HOST, PORT, CA_FILE, JID, PASSWORD, TO, PAYLOAD = sys.argv[1:8]


async def main():
    sender = Client(JID, PASSWORD, HOST, PORT, CA_FILE)
    await sender.start()
    sender.send_encrypted(TO, PAYLOAD)
    step(f"sent an encrypted message to {TO}")
    await asyncio.sleep(0.5)
    await sender.stop()


if __name__ == "__main__":
    run(main)
