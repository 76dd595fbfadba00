"""What a run is built from: data sources, initializers (data-driven ones register themselves), activations, optimizers, models (built-in and custom builders), mean-field math."""
