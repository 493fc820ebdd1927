-- wrk script: the client-credentials grant, HTTP Basic client authentication.
-- CLIENT_BASIC is base64("client_id:client_secret"); see benches/load.sh.
wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. os.getenv("CLIENT_BASIC")
