"""SEDA archive deposit: packages (seda), official schemas (schemas), SAE replies (replies), SAE checks (check)."""
