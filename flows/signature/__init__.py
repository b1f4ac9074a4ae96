"""Signatures: demo PKI (pki), certificates (certs, trust), XAdES PES signing (xades) and checking
(verify), detached signatures for actes (detached), PAdES (pades), the two-phase signature on the
official's token (remote, token, softhsm) and the server seal (seal). Shared XML-DSig pieces live
in dsig. See docs/signature.md."""
