"""Kit entry point of the cosmos_sim extension: Kit starts the IExt subclass found here."""

from cosmos_sim.bridge.omniverse.kit import CosmosSimExtension  # noqa: F401
