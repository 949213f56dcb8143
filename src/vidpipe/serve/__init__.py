"""Long-lived workers that take jobs from a queue (the top layer, beside `cli`): `worker` runs one request as a
job (jobs.runner) on stage chains kept loaded between requests; `runpod` is the RunPod serverless handler around
it (docs/deploy.md)."""
