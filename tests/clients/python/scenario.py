"""The official IBM Key Protect Python SDK (`keyprotect` 3.x on ibm-cloud-sdk-core), unmodified,
against kmsim's REST facade and IAM token endpoint. Run by .ci/python-sdk.sh; every check
asserts a result (state numbers, reason codes, bytes), and any failure exits non-zero.

Environment: KMSIM_REST_URL (e.g. http://127.0.0.1:7080), KMSIM_INSTANCE, KMSIM_API_KEY_FILE
(a file holding the API key), KMSIM_ADVANCE (a command that advances kmsim's simulated clock
by the number of seconds given as its argument).
"""

import base64
import json
import os
import subprocess
import sys
import urllib.parse

from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
from keyprotect import IbmKeyProtectApiV2

# --- The README's "Use your existing Key Protect code" snippet starts here.
url = os.environ["KMSIM_REST_URL"]
instance = os.environ["KMSIM_INSTANCE"]
with open(os.environ["KMSIM_API_KEY_FILE"], encoding="utf-8") as f:
    api_key = f.read().strip()

authenticator = IAMAuthenticator(api_key, url=url)  # POST {url}/identity/token
kp = IbmKeyProtectApiV2(authenticator=authenticator)
kp.set_service_url(url)
# --- The snippet ends here.


def advance(seconds):
    subprocess.run([os.environ["KMSIM_ADVANCE"], str(seconds)], check=True)


def body(resource):
    return json.dumps(
        {
            "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
            "resources": [dict(type="application/vnd.ibm.kms.key+json", **resource)],
        }
    ).encode()


def expect_error(call, status, code):
    try:
        call()
    except ApiException as error:
        assert error.code == status, (error.code, error.http_response.text)
        reasons = error.http_response.json()["resources"][0]["reasons"]
        assert reasons[0]["code"] == code, reasons
        return
    raise AssertionError(f"expected {status} {code}, the call succeeded")


def key_of(response):
    return response.get_result()["resources"][0]


b64 = lambda raw: base64.b64encode(raw).decode()
unb64 = base64.b64decode

# Create a root key.
created = kp.create_key(bluemix_instance=instance, key_create_body=body({"name": "py-root", "extractable": False}))
assert created.get_status_code() == 201
root = key_of(created)
assert root["state"] == 1 and root["extractable"] is False, root
key_id = root["id"]

# Wrap and unwrap a given DEK with AAD.
dek = bytes(range(32))
wrapped = kp.wrap_key(
    id=key_id, bluemix_instance=instance,
    key_action_wrap_body=json.dumps({"plaintext": b64(dek), "aad": ["tenant-1"]}).encode(),
).get_result()
first_version = wrapped["keyVersion"]["id"]
unwrapped = kp.unwrap_key(
    id=key_id, bluemix_instance=instance,
    key_action_unwrap_body=json.dumps({"ciphertext": wrapped["ciphertext"], "aad": ["tenant-1"]}).encode(),
).get_result()
assert unb64(unwrapped["plaintext"]) == dek
expect_error(
    lambda: kp.unwrap_key(
        id=key_id, bluemix_instance=instance,
        key_action_unwrap_body=json.dumps({"ciphertext": wrapped["ciphertext"], "aad": ["tenant-2"]}).encode(),
    ),
    422, "UNPROCESSABLE_CIPHERTEXT_ERR",
)

# Wrap with a generated DEK (no body), then unwrap it.
generated = kp.wrap_key(id=key_id, bluemix_instance=instance).get_result()
assert len(unb64(generated["plaintext"])) == 32
again = kp.unwrap_key(
    id=key_id, bluemix_instance=instance,
    key_action_unwrap_body=json.dumps({"ciphertext": generated["ciphertext"]}).encode(),
).get_result()
assert again["plaintext"] == generated["plaintext"]

# Rotate; the old ciphertext still unwraps and comes back rewrapped under the new version.
assert kp.rotate_key(id=key_id, bluemix_instance=instance).get_status_code() == 204
expect_error(lambda: kp.rotate_key(id=key_id, bluemix_instance=instance), 409, "KEY_ROTATION_NOT_PERMITTED")
old = kp.unwrap_key(
    id=key_id, bluemix_instance=instance,
    key_action_unwrap_body=json.dumps({"ciphertext": wrapped["ciphertext"], "aad": ["tenant-1"]}).encode(),
).get_result()
assert unb64(old["plaintext"]) == dek
assert old["keyVersion"]["id"] == first_version
assert old["rewrappedKeyVersion"]["id"] != first_version
versions = kp.get_key_versions(id=key_id, bluemix_instance=instance).get_result()
assert versions["metadata"]["collectionTotal"] == 2, versions

# Aliases, get by alias, list (the SDK sends an empty `state=`), and the HEAD total.
assert kp.create_key_alias(id=key_id, alias="py-alias", bluemix_instance=instance).get_status_code() in (200, 201)
assert key_of(kp.get_key(id="py-alias", bluemix_instance=instance))["id"] == key_id
listed = kp.get_keys(bluemix_instance=instance).get_result()
assert [k["id"] for k in listed["resources"]] == [key_id], listed
total = kp.get_key_collection_metadata(bluemix_instance=instance)
assert total.get_headers()["Key-Total"] == "1"

# Disable and enable (the state numbers follow).
assert kp.disable_key(id=key_id, bluemix_instance=instance).get_status_code() == 204
assert key_of(kp.get_key(id=key_id, bluemix_instance=instance))["state"] == 2
expect_error(lambda: kp.wrap_key(id=key_id, bluemix_instance=instance), 409, "KEY_ACTION_INVALID_STATE_ERR")
advance(31)
assert kp.enable_key(id=key_id, bluemix_instance=instance).get_status_code() == 204
assert key_of(kp.get_key(id=key_id, bluemix_instance=instance))["state"] == 1

# Key policies.
policies = kp.put_policy(
    id=key_id, bluemix_instance=instance, policy="rotation",
    key_policy_put_body={
        "metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
        "resources": [{"type": "application/vnd.ibm.kms.policy+json", "rotation": {"interval_month": 3}}],
    },
).get_result()
assert policies["resources"][0]["rotation"]["interval_month"] == 3
read = kp.get_policy(id=key_id, bluemix_instance=instance).get_result()
assert read["resources"][0]["rotation"]["interval_month"] == 3

# A database service registers its deployment against the key (the SDK has no call for this
# service-to-service write: the SDK's own request plumbing sends it); the key cannot be deleted
# then, and can once the registration is gone.
with open(os.environ["KMSIM_SERVICE_KEY_FILE"], encoding="utf-8") as f:
    service = IbmKeyProtectApiV2(authenticator=IAMAuthenticator(f.read().strip(), url=url))
service.set_service_url(url)
deployment = "crn:v1:bluemix:public:databases-for-postgresql:us-south:a/kmsim:pg-1::"
registration_path = f"/api/v2/keys/{key_id}/registrations/{urllib.parse.quote(deployment, safe='')}"
registered = service.send(service.prepare_request(
    method="POST", url=registration_path, headers={"Bluemix-Instance": instance, "content-type": "application/json"},
    data=json.dumps({"preventKeyDeletion": False, "description": "orders database"}),
))
assert registered.get_status_code() == 201
listed = kp.get_registrations(id=key_id, bluemix_instance=instance).get_result()
assert listed["resources"][0]["resourceCrn"] == deployment, listed
expect_error(lambda: kp.delete_key(id=key_id, bluemix_instance=instance), 409, "PROTECTED_RESOURCE_ERR")
service.send(service.prepare_request(method="DELETE", url=registration_path, headers={"Bluemix-Instance": instance}))

# Delete, purge refused before 4 hours, restore, force delete, purge after 4 hours.
assert kp.delete_key(id=key_id, bluemix_instance=instance).get_status_code() == 204
expect_error(lambda: kp.purge_key(id=key_id, bluemix_instance=instance), 409, "REQ_TOO_EARLY_ERR")
advance(31)
restored = kp.restore_key(id=key_id, bluemix_instance=instance)
assert restored.get_status_code() == 201
assert key_of(restored)["state"] == 1
deleted = kp.delete_key(id=key_id, bluemix_instance=instance, force=True, prefer="return=representation")
assert key_of(deleted)["state"] == 5
advance(4 * 3600 + 1)
# The simulated clock moved past the token's lifetime: kmsim now refuses that token while the
# SDK (on the real clock) still holds it, so build a new authenticator (see the README).
kp = IbmKeyProtectApiV2(authenticator=IAMAuthenticator(api_key, url=url))
kp.set_service_url(url)
assert key_of(kp.purge_key(id=key_id, bluemix_instance=instance))["id"] == key_id
expect_error(lambda: kp.get_key(id=key_id, bluemix_instance=instance), 404, "KEY_NOT_FOUND_ERR")

# Import token.
token = kp.post_import_token(bluemix_instance=instance, expiration=600, max_allowed_retrievals=2).get_result()
assert token["maxAllowedRetrievals"] == 2 and token["remainingRetrievals"] == 2, token
fetched = kp.get_import_token(bluemix_instance=instance).get_result()
assert fetched["remainingRetrievals"] == 1 and fetched["payload"] and fetched["nonce"], fetched

# A bad API key is refused by the token endpoint.
bad = IbmKeyProtectApiV2(
    authenticator=IAMAuthenticator("kmsim-ak-00000000000000000000000000000000-wrong-key-0000", url=url)
)
bad.set_service_url(url)
try:
    bad.get_keys(bluemix_instance=instance)
    raise AssertionError("a bad API key was accepted")
except ApiException as error:
    assert error.code == 400, error.code
    assert error.http_response.json()["errorCode"] == "BXNIM0415E"

print("python keyprotect SDK scenario: OK")
sys.exit(0)
