"""Customer-facing account API (Powertools APIGatewayHttpResolver behind a JWT authorizer)."""
