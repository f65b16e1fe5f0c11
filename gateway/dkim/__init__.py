"""DKIM: signing the relayed bytes, and the keys and their rotation."""
