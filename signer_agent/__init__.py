"""demat-signer: the signing agent that runs on the official's workstation.

It lists what waits for the official's signature, shows a readable summary, asks the PIN
locally, signs the digests on the official's token (PKCS#11) and posts the raw signature values.
The PIN and the key never leave the workstation. Light on purpose: the standard library and
python-pkcs11 only (through flows.signature.token), none of the platform's heavy modules.
"""
