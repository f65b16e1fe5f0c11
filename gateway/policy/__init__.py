"""Policy: the operator's rules as data (``policies/``), loaded, validated and swapped."""
