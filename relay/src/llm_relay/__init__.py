"""llm-relay: an OpenAI-compatible relay that injects upstream keys, streams, and seals envelopes."""

# The collection's version too (galaxy.yml): a collection deploys the relay of its own version, and the
# client wheel it writes beside the client config is this package.
__version__ = "1.3.0"
