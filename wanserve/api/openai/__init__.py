"""The OpenAI-style front door, `/v1/videos`: a second wire format over the same tasks."""
