"""`cartstream console`: the store's web app (live baskets, alerts, the review queue, labelling)
and the cart screens' push gateway."""
