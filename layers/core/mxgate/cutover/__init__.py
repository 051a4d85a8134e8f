"""The cutover checklist of `mxgate check`: pure judgements over DNS answers (through the
Resolver port), SMTP probe results and AWS descriptions, each a pass / warn / fail with its
evidence and what to do."""
