"""Provider webhooks (SES through SNS, SendGrid, Mailgun, Postmark): verified, read, recorded."""
