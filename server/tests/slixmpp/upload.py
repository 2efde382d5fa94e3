"""HTTP File Upload (XEP-0363) as a standard client uses it: find the
service, read its size limit, get a slot, PUT the file over HTTPS, GET it
back; a file over the limit is refused with <file-too-large/>, and a slot
cannot be used twice.

Usage: upload.py HOST PORT DOMAIN CA_FILE  (the server's upload limit
must be 4096 bytes, its URLs on HOST)
"""

import asyncio
import secrets
import ssl
import sys
import urllib.error
import urllib.request

from clients import Scenario, expect_error, run, step

UPLOAD = "urn:xmpp:http:upload:0"


def http(method, url, ca_file, data=None):
    """(status, body) of an HTTPS request checked against the test CA."""
    context = ssl.create_default_context(cafile=ca_file)
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/octet-stream")
    try:
        with urllib.request.urlopen(request, context=context, timeout=15) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


async def main():
    s = Scenario(sys.argv)
    (alice_jid,) = await s.register("alice")
    alice = await s.login(alice_jid + "/desk")

    items = await alice["xep_0030"].get_items(jid=s.domain)
    services = [item[0] for item in items["disco_items"]["items"]]
    service = None
    for jid in services:
        info = await alice["xep_0030"].get_info(jid=jid)
        if UPLOAD in info["disco_info"]["features"]:
            service = jid
            form = info["disco_info"].xml.find(".//{jabber:x:data}x")
            limit = int(form.find(".//{jabber:x:data}field[@var='max-file-size']/{jabber:x:data}value").text)
    assert service is not None, services
    assert limit == 4096, limit
    step(f"found the upload service {service} (files up to {limit} bytes)")

    data = secrets.token_bytes(3000)
    slot = await alice.request(
        f"<request xmlns='{UPLOAD}' filename='photo.jpg' size='{len(data)}' content-type='image/jpeg'/>",
        to=service)
    put_url = slot.xml.find(f".//{{{UPLOAD}}}put").get("url")
    get_url = slot.xml.find(f".//{{{UPLOAD}}}get").get("url")
    status, _ = await asyncio.to_thread(http, "PUT", put_url, s.ca_file, data)
    assert status == 201, status
    status, body = await asyncio.to_thread(http, "GET", get_url, s.ca_file)
    assert status == 200 and body == data, (status, len(body))
    step("a slot: the file PUT over HTTPS and downloaded again, byte for byte")

    status, _ = await asyncio.to_thread(http, "PUT", put_url, s.ca_file, data)
    assert status == 409, status
    error = await expect_error(alice.request(
        f"<request xmlns='{UPLOAD}' filename='big.bin' size='{limit + 1}'/>", to=service), "not-acceptable")
    assert error.xml.find(f".//{{{UPLOAD}}}file-too-large") is not None, error
    step("a used slot cannot be overwritten; a file over the limit is refused with <file-too-large/>")

    await s.stop()


if __name__ == "__main__":
    run(main)
