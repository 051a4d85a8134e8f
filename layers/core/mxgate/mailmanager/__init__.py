"""SES Mail Manager as code: the template's resources as models, and their evaluation."""
