"""What the bridge's slixmpp scenarios share: a client of the bridge that
records every message and presence it gets, and waits for one."""

import asyncio

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

TIMEOUT = 60


def step(text):
    print(f"ok - {text}", flush=True)


class RecordingClient(slixmpp.ClientXMPP):
    """A client trusting the bridge's certificate `cert`; `messages` holds
    every message and presence received, body or not."""

    def __init__(self, jid, password, cert, plugins=()):
        super().__init__(jid, password)
        self.ca_certs = cert
        for plugin in plugins:
            self.register_plugin(plugin)
        self.online = asyncio.get_running_loop().create_future()
        self.messages = []
        self.arrived = asyncio.Event()
        self.add_event_handler("session_start", self.on_start)
        for name in ("message", "presence"):
            self.register_handler(Callback(f"every {name}", MatchXPath(f"{{jabber:client}}{name}"), self.record))

    async def on_start(self, _event):
        await self.get_roster()
        self.send_presence()
        self.online.set_result(True)

    def record(self, stanza):
        self.messages.append(stanza)
        self.arrived.set()

    async def start(self, host, port):
        self.connect(host=host, port=int(port))
        await asyncio.wait_for(self.online, TIMEOUT)

    async def wait_for(self, what, predicate):
        """The first stanza `predicate` accepts (within TIMEOUT)."""
        async def look():
            while True:
                for stanza in self.messages:
                    if predicate(stanza):
                        return stanza
                self.arrived.clear()
                await self.arrived.wait()
        try:
            return await asyncio.wait_for(look(), TIMEOUT)
        except asyncio.TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; got {[str(m) for m in self.messages]}")
