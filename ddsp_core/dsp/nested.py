"""Flattened-key access to nested dictionaries ('harmonic/signal')."""

from __future__ import annotations

from typing import Any, Dict, List, Text


def nested_keys(nested_dict: Dict[Text, Any], delimiter: Text = '/',
                prefix: Text = '') -> List[str]:
    """All leaf keys of a nested dict, joined with `delimiter` (e.g. 'harmonic/signal')."""
    keys = []
    for key, value in nested_dict.items():
        full = f'{prefix}{delimiter}{key}' if prefix else str(key)
        if isinstance(value, dict):
            keys.extend(nested_keys(value, delimiter=delimiter, prefix=full))
        else:
            keys.append(full)
    return keys


def nested_lookup(nested_key: Text, nested_dict: Dict[Text, Any], delimiter: Text = '/') -> Any:
    """Looks up 'a/b/c' in a nested dict; a KeyError names the missing key and what exists."""
    value = nested_dict
    for part in nested_key.split(delimiter):
        if not isinstance(value, dict) or part not in value:
            available = nested_keys(nested_dict, delimiter=delimiter)
            raise KeyError(f'Key {nested_key!r} not found (missing part {part!r}); '
                           f'available keys: {available}')
        value = value[part]
    return value
