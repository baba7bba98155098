"""REST v1 through Debian's python3-twilio helper library (twilio-python 7.x).

Starts the real chorus binary (CHORUS_BIN, else `go build ./cmd/chorus`) on a free loopback
port with a fresh data dir, points the library at it with `client.sync.base_url`, and drives
create / fetch / update / list / delete of Documents, Lists, Maps and Streams, their items,
permissions and stream messages, checking that data round-trips exactly.

Run: /usr/bin/python3 -m unittest discover -s test/python -v   (Debian's python3, where python3-twilio
lives; scripts/test runs it after the Node suites)
"""

import hashlib
import os
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
import unittest
import urllib.request

# Loopback only, whatever proxy the environment names.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
for _k in ("TWILIO_EDGE", "TWILIO_REGION"):  # the library rewrites hosts when these are set
    os.environ.pop(_k, None)

import twilio  # noqa: E402  (after the environment is cleaned)
from twilio.base.exceptions import TwilioRestException  # noqa: E402
from twilio.rest import Client  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Everything JSON can carry, and text that form encoding must not mangle.
DATA = {
    "text": 'é ü 😀 "quoted" \\ back\nnew line\r\n&a=b%20 +plus',
    "n": 1.5,
    "big": 9007199254740991,
    "neg": -3,
    "t": True,
    "f": False,
    "nil": None,
    "arr": [1, "two", {"three": [3]}, []],
    "obj": {"nested": {"deeper": {}}},
}


def _hex32(seed):
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


def _alnum32(seed):
    abc = string.ascii_uppercase + string.ascii_lowercase + string.digits
    return "".join(abc[b % len(abc)] for b in hashlib.sha512(seed.encode()).digest()[:32])


CREDS = {
    "account_sid": "AC" + _hex32("chorus-python/account"),
    "auth_token": _alnum32("chorus-python/auth-token"),
    "api_key": "SK" + _hex32("chorus-python/api-key"),
    "api_secret": _alnum32("chorus-python/api-secret"),
    "service_sid": "IS" + _hex32("chorus-python/service"),
}


class Server:
    """The chorus binary on 127.0.0.1:<free port> with a temporary data dir."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="chorus-python-")
        self.bin = os.environ.get("CHORUS_BIN")
        if not self.bin:
            self.bin = os.path.join(self.tmp, "chorus")
            subprocess.run(["go", "build", "-o", self.bin, "./cmd/chorus"], cwd=REPO, check=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base_url = "http://127.0.0.1:%d" % self.port
        env = dict(
            os.environ,
            CHORUS_DATA_DIR=os.path.join(self.tmp, "data"),
            TWILIO_ACCOUNT_SID=CREDS["account_sid"],
            TWILIO_AUTH_TOKEN=CREDS["auth_token"],
            TWILIO_API_KEY=CREDS["api_key"],
            TWILIO_API_SECRET=CREDS["api_secret"],
            TWILIO_SYNC_SERVICE_SID=CREDS["service_sid"],
        )
        self.log = open(os.path.join(self.tmp, "server.log"), "wb")
        self.proc = subprocess.Popen(
            [self.bin, "serve", "--listen", "127.0.0.1:%d" % self.port],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("chorus exited with %s:\n%s" % (self.proc.returncode, self.logs()))
            try:
                with urllib.request.urlopen(self.base_url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError as e:
                last = e
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("chorus did not answer /healthz within 30 s (%s):\n%s" % (last, self.logs()))

    def logs(self):
        self.log.flush()
        with open(self.log.name, "rb") as f:
            return f.read()[-8192:].decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


SERVER = None


def setUpModule():
    global SERVER
    SERVER = Server()


def tearDownModule():
    if SERVER:
        SERVER.stop()


class RestTest(unittest.TestCase):
    """One service per test class; each test owns its objects."""

    @classmethod
    def setUpClass(cls):
        cls.client = Client(CREDS["api_key"], CREDS["api_secret"], CREDS["account_sid"])
        cls.client.sync.base_url = SERVER.base_url
        svc = cls.client.sync.v1.services.create(friendly_name="python " + twilio.__version__)
        assert svc.friendly_name == "python " + twilio.__version__, svc.friendly_name
        cls.svc = cls.client.sync.v1.services(svc.sid)

    def assertRestError(self, fn, status, code):
        with self.assertRaises(TwilioRestException) as cm:
            fn()
        self.assertEqual((cm.exception.status, cm.exception.code), (status, code), cm.exception.msg)

    def assertSid(self, sid, prefix):
        self.assertRegex(sid, "^%s[0-9a-f]{32}$" % prefix)

    def test_documents(self):
        doc = self.svc.documents.create(unique_name="py-doc", data=DATA, ttl=3600)
        self.assertSid(doc.sid, "ET")
        self.assertEqual(doc.unique_name, "py-doc")
        self.assertEqual(doc.data, DATA)
        self.assertIsNotNone(doc.date_expires, "create applied Ttl")
        self.assertEqual(self.svc.documents(doc.sid).fetch().data, DATA)
        self.assertEqual(self.svc.documents("py-doc").fetch().sid, doc.sid)
        empty = self.svc.documents.create()
        self.assertEqual((empty.unique_name, empty.data), (None, {}))

        upd = self.svc.documents("py-doc").update(data={"replaced": [DATA["text"]]})
        self.assertEqual(upd.data, {"replaced": [DATA["text"]]})
        self.assertNotEqual(upd.revision, doc.revision)
        self.assertRestError(lambda: self.svc.documents("py-doc").update(data={"x": 1}, if_match=doc.revision), 412, 54103)
        self.assertEqual(self.svc.documents("py-doc").update(data={"y": 2}, if_match=upd.revision).data, {"y": 2})

        sids = [d.sid for d in self.svc.documents.list(page_size=1)]
        self.assertEqual(sorted(sids), sorted([doc.sid, empty.sid]))

        perm = self.svc.documents("py-doc").document_permissions("alice é").update(read=True, write=False, manage=True)
        self.assertEqual((perm.identity, perm.read, perm.write, perm.manage), ("alice é", True, False, True))
        self.assertEqual([p.identity for p in self.svc.documents("py-doc").document_permissions.list()], ["alice é"])
        self.assertTrue(self.svc.documents("py-doc").document_permissions("alice é").delete())

        self.assertTrue(self.svc.documents("py-doc").delete())
        self.assertTrue(self.svc.documents(empty.sid).delete())
        self.assertRestError(lambda: self.svc.documents("py-doc").fetch(), 404, 20404)

    def test_lists(self):
        lst = self.svc.sync_lists.create(unique_name="py-list", ttl=3600)
        self.assertSid(lst.sid, "ES")
        self.assertEqual(lst.unique_name, "py-list")
        self.assertIsNotNone(lst.date_expires)
        self.assertIsNone(self.svc.sync_lists("py-list").update(ttl=0).date_expires)

        items = self.svc.sync_lists("py-list").sync_list_items
        created = [items.create(data={"i": i, "DATA": DATA}) for i in range(5)]
        self.assertEqual([it.index for it in created], [0, 1, 2, 3, 4])
        self.assertEqual(self.svc.sync_lists("py-list").sync_list_items(3).fetch().data, {"i": 3, "DATA": DATA})
        self.assertEqual(self.svc.sync_lists("py-list").sync_list_items(2).update(data={"i": "two"}).data, {"i": "two"})
        self.assertEqual([it.index for it in items.list(page_size=2)], [0, 1, 2, 3, 4])
        desc = items.list(order="desc", from_="3", bounds="exclusive", page_size=2)
        self.assertEqual([it.index for it in desc], [2, 1, 0])
        self.assertTrue(self.svc.sync_lists("py-list").sync_list_items(0).delete())
        self.assertRestError(lambda: self.svc.sync_lists("py-list").sync_list_items(0).fetch(), 404, 20404)

        perm = self.svc.sync_lists("py-list").sync_list_permissions("bob").update(read=True, write=True, manage=False)
        self.assertEqual((perm.read, perm.write, perm.manage), (True, True, False))
        self.assertTrue(self.svc.sync_lists("py-list").sync_list_permissions("bob").delete())

        self.assertIn(lst.sid, [l.sid for l in self.svc.sync_lists.list()])
        self.assertTrue(self.svc.sync_lists("py-list").delete())
        self.assertRestError(lambda: self.svc.sync_lists("py-list").fetch(), 404, 20404)

    def test_maps(self):
        m = self.svc.sync_maps.create(unique_name="py-map")
        self.assertSid(m.sid, "MP")
        self.assertEqual(m.unique_name, "py-map")
        self.assertIsNotNone(self.svc.sync_maps("py-map").update(ttl=3600).date_expires)

        keys = ["a", "k é +&=%", "c", "d"]
        for k in keys:
            it = self.svc.sync_maps("py-map").sync_map_items.create(key=k, data={"key": k, "DATA": DATA})
            self.assertEqual((it.key, it.data), (k, {"key": k, "DATA": DATA}))
        self.assertEqual(self.svc.sync_maps("py-map").sync_map_items("k é +&=%").fetch().data, {"key": "k é +&=%", "DATA": DATA})
        self.assertEqual(self.svc.sync_maps("py-map").sync_map_items("c").update(data={"c": DATA["arr"]}).data, {"c": DATA["arr"]})
        self.assertRestError(lambda: self.svc.sync_maps("py-map").sync_map_items.create(key="a", data={}), 409, 54208)
        self.assertEqual([it.key for it in self.svc.sync_maps("py-map").sync_map_items.list(page_size=2)], sorted(keys))
        desc = self.svc.sync_maps("py-map").sync_map_items.list(order="desc", from_="c", bounds="inclusive")
        self.assertEqual([it.key for it in desc], ["c", "a"])
        self.assertTrue(self.svc.sync_maps("py-map").sync_map_items("k é +&=%").delete())

        perm = self.svc.sync_maps("py-map").sync_map_permissions("carol").update(read=False, write=True, manage=True)
        self.assertEqual((perm.read, perm.write, perm.manage), (False, True, True))
        self.assertTrue(self.svc.sync_maps("py-map").sync_map_permissions("carol").delete())

        self.assertTrue(self.svc.sync_maps("py-map").delete())
        self.assertRestError(lambda: self.svc.sync_maps("py-map").fetch(), 404, 20404)

    def test_streams(self):
        st = self.svc.sync_streams.create(unique_name="py-stream", ttl=3600)
        self.assertSid(st.sid, "TO")
        self.assertEqual(st.unique_name, "py-stream")
        self.assertIsNotNone(st.date_expires)
        self.assertIsNone(self.svc.sync_streams("py-stream").update(ttl=0).date_expires)
        msg = self.svc.sync_streams("py-stream").stream_messages.create(data=DATA)
        self.assertSid(msg.sid, "TZ")
        self.assertEqual(msg.data, DATA)
        self.assertRestError(lambda: self.svc.sync_streams("py-stream").stream_messages.create(data={"x": "y" * 5000}), 413, 54006)
        self.assertIn(st.sid, [s.sid for s in self.svc.sync_streams.list()])
        self.assertTrue(self.svc.sync_streams("py-stream").delete())
        self.assertRestError(lambda: self.svc.sync_streams("py-stream").fetch(), 404, 20404)

    def test_requests_are_forms(self):
        """twilio-python posts urlencoded bodies and pages through the query string."""
        self.svc.documents.create(unique_name="py-form", data={"a": 1})
        req = self.client.http_client.last_request
        self.assertEqual(req.method, "POST")
        self.assertEqual(req.headers["Content-Type"], "application/x-www-form-urlencoded")
        self.assertEqual((req.data["UniqueName"], req.data["Data"]), ("py-form", '{"a": 1}'))
        list(self.svc.documents.list(page_size=1))
        req = self.client.http_client.last_request
        self.assertEqual((req.method, req.params.get("PageSize")), ("GET", 1))


if __name__ == "__main__":
    unittest.main()
