"""Prompt templates: rendering in a sandbox, and which version a job gets."""
