"""The web pages people use (/ui), server-rendered in Simplified Chinese for an offline
network: every page calls the platform's own REST API in-process with the signed-in
user's token, so the API's access rules and scopes apply to the pages unchanged."""
