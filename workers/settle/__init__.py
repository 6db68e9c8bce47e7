"""How a job ends: its result and usage built, stored, published, or dead-lettered."""
