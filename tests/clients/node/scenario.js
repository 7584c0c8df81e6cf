// The official IBM Key Protect Node SDK (`@ibm-cloud/ibm-key-protect` 0.1.2 on the unscoped
// `ibm-cloud-sdk-core`), unmodified, against kmsim's REST facade and IAM token endpoint.
// Run by .ci/node-sdk.sh; every check asserts a result, and any failure exits non-zero.
// Environment: KMSIM_REST_URL, KMSIM_INSTANCE, KMSIM_API_KEY_FILE (a file holding the API key).
'use strict';

const assert = require('assert');
const fs = require('fs');
const KeyProtectV2 = require('@ibm-cloud/ibm-key-protect/ibm-key-protect-api/v2');
const { IamAuthenticator } = require('@ibm-cloud/ibm-key-protect/auth');

// --- The README's Node snippet starts here.
const url = process.env.KMSIM_REST_URL;
const bluemixInstance = process.env.KMSIM_INSTANCE;
const apikey = fs.readFileSync(process.env.KMSIM_API_KEY_FILE, 'utf8').trim();
const kp = new KeyProtectV2({
  authenticator: new IamAuthenticator({ apikey, url }), // POST {url}/identity/token
  serviceUrl: url,
});
// --- The snippet ends here.

const b64 = (bytes) => Buffer.from(bytes).toString('base64');
const unb64 = (text) => Buffer.from(text, 'base64');

function errorBody(err) {
  const body = err.body;
  return typeof body === 'string' ? JSON.parse(body) : body;
}

async function expectError(call, status, code) {
  try {
    await call();
  } catch (err) {
    assert.strictEqual(err.status, status, `status of ${err.message}`);
    assert.strictEqual(errorBody(err).resources[0].reasons[0].code, code);
    return;
  }
  throw new Error(`expected ${status} ${code}, the call succeeded`);
}

async function main() {
  const created = await kp.createKey({
    bluemixInstance,
    body: {
      metadata: { collectionType: 'application/vnd.ibm.kms.key+json', collectionTotal: 1 },
      resources: [{ type: 'application/vnd.ibm.kms.key+json', name: 'node-root', extractable: false }],
    },
  });
  assert.strictEqual(created.status, 201);
  const key = created.result.resources[0];
  assert.strictEqual(key.state, 1);
  const id = key.id;

  const got = await kp.getKey({ id, bluemixInstance });
  assert.strictEqual(got.result.resources[0].name, 'node-root');

  // Given DEK, then a generated one.
  const dek = Buffer.alloc(32, 9);
  const wrapped = (await kp.wrapKey({ id, bluemixInstance, keyActionWrapBody: { plaintext: b64(dek) } })).result;
  const unwrapped = (await kp.unwrapKey({ id, bluemixInstance, keyActionUnwrapBody: { ciphertext: wrapped.ciphertext } })).result;
  assert.ok(unb64(unwrapped.plaintext).equals(dek));
  const generated = (await kp.wrapKey({ id, bluemixInstance, keyActionWrapBody: {} })).result;
  assert.strictEqual(unb64(generated.plaintext).length, 32);
  const back = (await kp.unwrapKey({ id, bluemixInstance, keyActionUnwrapBody: { ciphertext: generated.ciphertext } })).result;
  assert.strictEqual(back.plaintext, generated.plaintext);

  // Rotate, unwrap the old ciphertext (rewrapped), versions.
  const rotated = await kp.rotateKey({ id, bluemixInstance });
  assert.strictEqual(rotated.status, 204);
  const old = (await kp.unwrapKey({ id, bluemixInstance, keyActionUnwrapBody: { ciphertext: wrapped.ciphertext } })).result;
  assert.ok(unb64(old.plaintext).equals(dek));
  assert.notStrictEqual(old.rewrappedKeyVersion.id, old.keyVersion.id);
  const versions = (await kp.getKeyVersions({ id, bluemixInstance })).result;
  assert.strictEqual(versions.metadata.collectionTotal, 2);

  // An error body: the wrong ciphertext.
  await expectError(
    () => kp.unwrapKey({ id, bluemixInstance, keyActionUnwrapBody: { ciphertext: b64(Buffer.alloc(40)) } }),
    422, 'UNPROCESSABLE_CIPHERTEXT_ERR',
  );

  // Delete (204), then the key reads as deleted (state 5).
  const deleted = await kp.deleteKey({ id, bluemixInstance });
  assert.strictEqual(deleted.status, 204);
  const meta = (await kp.getKeyMetadata({ id, bluemixInstance })).result;
  assert.strictEqual(meta.resources[0].state, 5);

  // A bad API key is refused by the token endpoint.
  const bad = new KeyProtectV2({
    authenticator: new IamAuthenticator({ apikey: 'kmsim-ak-00000000000000000000000000000000-wrong-key-0000', url }),
    serviceUrl: url,
  });
  let refused = false;
  try {
    await bad.getKeys({ bluemixInstance });
  } catch (err) {
    refused = true;
    assert.strictEqual(err.status, 400, err.message);
  }
  assert.ok(refused, 'a bad API key was accepted');
  console.log('node ibm-key-protect SDK scenario: OK');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
