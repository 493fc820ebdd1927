#!/usr/bin/env python3
"""Smoke test of the SAML peer (SimpleSAMLphp): starts saml/start.py in a temporary work dir and
drives one SP-initiated login over plain HTTP, without a browser:

  AuthnRequest (HTTP-Redirect) -> login form -> POST username/password/AuthState
  -> auto-submitting form with SAMLResponse + RelayState (what a test then POSTs to the ACS)

It checks the signature with `xmlsec1 --verify` against the IdP certificate (assertion signed;
for a second SP, the response signed too), that a tampered attribute breaks it, and prints the
NameID, conditions and attributes. Standard library + xmlsec1 (apt-get install xmlsec1) only.

  python3 tests/peers/smoke_saml.py
"""

import base64
import datetime
import html.parser
import http.cookiejar
import json
import os
import secrets
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
START = os.path.join(HERE, "saml", "start.py")
NS = {
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
}


def check(cond, msg):
    if not cond:
        raise SystemExit(f"check failed: {msg}")


class Forms(html.parser.HTMLParser):
    """Collects <form action> and its <input name value> pairs."""

    def __init__(self):
        super().__init__()
        self.forms = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action"), "method": a.get("method"), "fields": {}})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["fields"][a["name"]] = a.get("value") or ""


def forms_of(body: str):
    p = Forms()
    p.feed(body)
    return p.forms


def authn_request(idp, sp_entity_id, acs):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    req_id = "_" + secrets.token_hex(16)
    xml = (
        f'<samlp:AuthnRequest xmlns:samlp="{NS["samlp"]}" xmlns:saml="{NS["saml"]}" '
        f'ID="{req_id}" Version="2.0" IssueInstant="{now}" Destination="{idp["sso_url"]}" '
        f'AssertionConsumerServiceURL="{acs}" '
        f'ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST">'
        f"<saml:Issuer>{sp_entity_id}</saml:Issuer>"
        f'<samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent" AllowCreate="true"/>'
        f"</samlp:AuthnRequest>"
    )
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw DEFLATE, as the Redirect binding says
    encoded = base64.b64encode(deflater.compress(xml.encode()) + deflater.flush()).decode()
    return req_id, encoded


def login(idp, sp_entity_id, acs, username, password):
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))  # follows 30x
    req_id, saml_request = authn_request(idp, sp_entity_id, acs)
    relay = "relay-" + secrets.token_hex(8)
    url = idp["sso_url"] + "?" + urllib.parse.urlencode({"SAMLRequest": saml_request, "RelayState": relay})

    # 1. AuthnRequest -> 302 to the login form (module.php/core/loginuserpass.php?AuthState=...)
    with opener.open(url) as r:
        login_url, body = r.geturl(), r.read().decode()
    print(f"  login form at {login_url.split('?')[0]}?AuthState=...")
    form = next(f for f in forms_of(body) if "password" in f["fields"])
    check("AuthState" in form["fields"], "login form carries AuthState")

    # 2. POST username, password, AuthState -> HTML form that auto-submits SAMLResponse to the ACS
    data = urllib.parse.urlencode({"username": username, "password": password,
                                   "AuthState": form["fields"]["AuthState"]}).encode()
    action = urllib.parse.urljoin(login_url, form["action"] or login_url)
    with opener.open(urllib.request.Request(action, data=data)) as r:
        body = r.read().decode()
    post = next(f for f in forms_of(body) if "SAMLResponse" in f["fields"])
    check(post["action"] == acs, f"form posts to the ACS ({post['action']})")
    check(post["fields"].get("RelayState") == relay, "RelayState passed through")
    return req_id, base64.b64decode(post["fields"]["SAMLResponse"])


def xmlsec_verify(idp, xml_bytes, node_xpath=None):
    with tempfile.NamedTemporaryFile(suffix=".xml", delete=False) as f:
        f.write(xml_bytes)
    argv = ["xmlsec1", "--verify", "--pubkey-cert-pem", idp["cert_pem_path"],
            "--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:protocol:Response",
            "--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:assertion:Assertion"]
    if node_xpath:
        argv += ["--node-xpath", node_xpath]
    r = subprocess.run(argv + [f.name], capture_output=True, text=True)
    os.unlink(f.name)
    lines = (r.stdout + r.stderr).strip().splitlines()
    summary = [ln for ln in lines if ln == "OK" or ln.startswith(("SignedInfo", "Error", "FAIL"))]
    return r.returncode == 0, " ".join(summary or lines[-1:])


def describe(xml_bytes, req_id, sp_entity_id, acs):
    root = ET.fromstring(xml_bytes)
    a = root.find("saml:Assertion", NS)
    check(a is not None, "assertion present (not encrypted)")
    check(root.get("InResponseTo") == req_id, "Response InResponseTo = AuthnRequest ID")
    check(root.get("Destination") == acs, "Destination = ACS")
    sig_on_response = root.find("ds:Signature", NS) is not None
    sig_on_assertion = a.find("ds:Signature", NS) is not None
    subj = a.find("saml:Subject", NS)
    nameid = subj.find("saml:NameID", NS)
    scd = subj.find("saml:SubjectConfirmation/saml:SubjectConfirmationData", NS)
    cond = a.find("saml:Conditions", NS)
    audience = cond.find("saml:AudienceRestriction/saml:Audience", NS).text
    check(audience == sp_entity_id, "Audience = SP entity id")
    check(scd.get("Recipient") == acs and scd.get("InResponseTo") == req_id, "Recipient and InResponseTo")
    window = (datetime.datetime.fromisoformat(cond.get("NotOnOrAfter").replace("Z", "+00:00"))
              - datetime.datetime.fromisoformat(cond.get("NotBefore").replace("Z", "+00:00"))).total_seconds()
    attrs = {at.get("Name"): [v.text for v in at.findall("saml:AttributeValue", NS)]
             for at in a.findall("saml:AttributeStatement/saml:Attribute", NS)}
    alg = root.find(".//ds:SignatureMethod", NS).get("Algorithm")
    print(f"  signed: response={sig_on_response} assertion={sig_on_assertion} ({alg})")
    print(f"  NameID {nameid.get('Format').rsplit(':', 1)[-1]} = {nameid.text}")
    print(f"  Audience {audience}; Recipient {scd.get('Recipient')}; "
          f"NotBefore {cond.get('NotBefore')} NotOnOrAfter {cond.get('NotOnOrAfter')}")
    print(f"  attributes {json.dumps(attrs)}")
    return sig_on_response, sig_on_assertion, attrs, window


def main():
    work = tempfile.mkdtemp(prefix="saml-peer-")
    sp1 = ("http://127.0.0.1:9/t/acme/auth/saml/idp1/metadata", "http://127.0.0.1:9/t/acme/auth/saml/idp1/acs")
    sp2 = ("http://127.0.0.1:9/t/beta/auth/saml/idp2/metadata", "http://127.0.0.1:9/t/beta/auth/saml/idp2/acs")
    out = subprocess.run([sys.executable, START, "start", "--workdir", work,
                          "--sp-entity-id", sp1[0], "--sp-acs", sp1[1]],
                         check=True, capture_output=True, text=True).stdout
    idp = json.loads(out.strip().splitlines()[-1])
    print(f"saml peer: {json.dumps(idp)}")
    try:
        print("SP 1 (assertion signed):")
        req_id, xml = login(idp, *sp1, "alice", "alice-pass")
        resp_signed, assertion_signed, attrs, window = describe(xml, req_id, *sp1)
        check(window == 330, "default window: NotBefore = now - 30 s, NotOnOrAfter = now + 300 s")
        check(assertion_signed and not resp_signed, "assertion signed, response not")
        check(attrs["groups"] == ["finance", "admins"] and attrs["department"] == ["finance"], "attributes")
        ok, msg = xmlsec_verify(idp, xml)
        check(ok, f"xmlsec1 verifies the assertion signature: {msg}")
        print(f"  xmlsec1 --verify: {msg}")
        tampered = xml.replace(b"finance</saml:AttributeValue>", b"admins!</saml:AttributeValue>", 1)
        check(tampered != xml, "tamper applied")
        ok, msg = xmlsec_verify(idp, tampered)
        check(not ok, "a tampered attribute fails verification")
        print(f"  tampered attribute -> xmlsec1 fails: {msg}")

        # A second SP registered on the running IdP, with the response signed as well.
        subprocess.run([sys.executable, START, "add-sp", "--workdir", work, "--sp-entity-id", sp2[0],
                        "--sp-acs", sp2[1], "--sp-sign-response", "--sp-assertion-lifetime", "60"], check=True, capture_output=True)
        # A user changed on the running IdP (what a "group removed at the IdP" test does).
        subprocess.run([sys.executable, START, "set-user", "--workdir", work, "--username", "carol",
                        "--password", "carol-pass", "--attr", "email=carol@beta.example",
                        "--attr", "name=Carol", "--attr", "groups=ops", "--attr", "groups=oncall",
                        "--attr", "department=ops"], check=True, capture_output=True)
        print("SP 2 (added at run time; response and assertion signed; assertion lifetime 60 s), "
              "user carol added at run time:")
        req_id, xml = login(idp, *sp2, "carol", "carol-pass")
        resp_signed, assertion_signed, attrs, window = describe(xml, req_id, *sp2)
        check(window == 90, "--sp-assertion-lifetime 60 gives NotOnOrAfter = now + 60 s")
        check(resp_signed and assertion_signed, "both signed")
        check(attrs["groups"] == ["ops", "oncall"], "carol's groups")
        ok, msg = xmlsec_verify(idp, xml, "/*[local-name()='Response']/*[local-name()='Signature']")
        check(ok, f"response signature verifies: {msg}")
        ok2, msg2 = xmlsec_verify(idp, xml, "//*[local-name()='Assertion']/*[local-name()='Signature']")
        check(ok2, f"assertion signature verifies: {msg2}")
        print(f"  xmlsec1 --verify response: {msg}; assertion: {msg2}")
        print("smoke_saml: OK")
    finally:
        subprocess.run([sys.executable, START, "stop", "--workdir", work], check=False)


if __name__ == "__main__":
    main()
