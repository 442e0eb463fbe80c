"""Visma.net ERP (target system): API client and read models."""

from .client import (
    DEFAULT_BASE_URL,
    DEFAULT_SCOPES,
    DEFAULT_TOKEN_URL,
    Plain,
    TokenRejected,
    VismaClient,
    parse_visma_error,
    wrap_values,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_SCOPES",
    "DEFAULT_TOKEN_URL",
    "Plain",
    "TokenRejected",
    "VismaClient",
    "parse_visma_error",
    "wrap_values",
]
