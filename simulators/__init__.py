"""Counterparts played locally over real SFTP: préfecture (@ctes), DGFiP (Hélios), SAE (SEDA).

`python -m simulators --state DIR --config flows/config/demo.yaml` starts them; see run.py.
Modules: sftpd (asyncssh server), counterparts (ledger + processing loop), prefecture, dgfip,
sae (rules), actes_wire (the préfecture's own reading of @ctes archives), keys (ed25519 keys).
"""
