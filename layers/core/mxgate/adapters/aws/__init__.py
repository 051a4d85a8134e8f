"""AWS adapters: S3, DynamoDB, SES, EventBridge and SQS behind the core's ports."""
