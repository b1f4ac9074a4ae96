"""Signatures: demo PKI (pki), certificates (certs), XAdES PES signing (xades) and checking
(verify), detached signatures for actes (detached). Shared XML-DSig pieces live in dsig."""
