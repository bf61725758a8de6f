"""What comes back after a message was accepted: bounces (RFC 3464 DSNs and
provider webhooks), complaints (ARF, RFC 5965) and mailto unsubscribes
(RFC 2369); read, attributed to a delivery or a reader, and acted on."""
