"""The demo: a loyalty program modelled on the seed documents and a scripted day of member activity."""
