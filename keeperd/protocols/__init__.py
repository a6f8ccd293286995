"""Protocol adapters: one package per protocol, all behind `keeperd.protocols.sdk.views`."""
