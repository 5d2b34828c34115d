//! One authenticated session with a PostgreSQL server: socket or TLS transport, the startup and
//! authentication exchange, buffered message reading, and simple queries. It exists so that
//! replication commands (see `replication.rs`) can be written against a small, well-tested core
//! without pulling a full SQL driver into pgvault.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::{DataRowBody, ErrorFields, Message, RowDescriptionBody};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::error::ProtocolError;
use super::params::{parse_server_version, ConnParams, SslMode, MIN_SERVER_VERSION_NUM};
use super::tls;

/// Read buffer growth step; CopyData messages of a base backup are about 32 kB each.
const READ_CHUNK: usize = 128 * 1024;
/// Largest message we accept (PostgreSQL's own limit for a field is 1 GB).
const MAX_MESSAGE_LEN: usize = (1 << 30) + (1 << 20);

/// The byte stream under the protocol: plain TCP, TLS over TCP, or a Unix socket.
pub(crate) enum Transport {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Unix(UnixStream),
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A started, authenticated session, either ordinary SQL or physical replication.
pub struct Connection {
    transport: Transport,
    rbuf: BytesMut,
    wbuf: BytesMut,
    parameters: HashMap<String, String>,
    server_version_num: u32,
    backend_key: Option<(i32, i32)>,
    replication: bool,
    endpoint: String,
    user: String,
    /// Set while a COPY stream (BASE_BACKUP) is open; a stream dropped half-way leaves it set
    /// and the connection unusable.
    pub(crate) in_copy: bool,
    /// tls-server-end-point hash of the server certificate, when on TLS and computable.
    end_point_hash: Option<Vec<u8>>,
    /// SCRAM ran as SCRAM-SHA-256-PLUS (bound to the TLS channel).
    channel_bound: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("endpoint", &self.endpoint)
            .field("user", &self.user)
            .field("replication", &self.replication)
            .field("tls", &self.is_tls())
            .field("server_version_num", &self.server_version_num)
            .finish()
    }
}

impl Connection {
    /// Connects, negotiates TLS per `params.sslmode`, authenticates and checks that the server
    /// is PostgreSQL 15 or newer. With `replication`, the session is a physical-replication
    /// walsender (startup parameter `replication=true`).
    pub async fn connect(params: &ConnParams, replication: bool) -> Result<Connection, ProtocolError> {
        let fut = Self::connect_inner(params, replication);
        if params.connect_timeout.is_zero() {
            return fut.await;
        }
        match tokio::time::timeout(params.connect_timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(ProtocolError::Timeout {
                what: format!("connecting to PostgreSQL at {}", params.endpoint()),
                timeout: params.connect_timeout,
            }),
        }
    }

    async fn connect_inner(params: &ConnParams, replication: bool) -> Result<Connection, ProtocolError> {
        let transport = open_transport(params).await?;
        let end_point_hash = match &transport {
            Transport::Tls(stream) => stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|cert| tls::tls_server_end_point(cert)),
            _ => None,
        };
        let mut conn = Connection {
            transport,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(1024),
            parameters: HashMap::new(),
            server_version_num: 0,
            backend_key: None,
            replication,
            endpoint: params.endpoint(),
            user: params.user.clone(),
            in_copy: false,
            end_point_hash,
            channel_bound: false,
        };
        conn.startup(params).await?;
        let version_text = conn.parameter("server_version").unwrap_or_default().to_string();
        let Some(num) = parse_server_version(&version_text) else {
            return Err(ProtocolError::Protocol(format!(
                "the server at {} reported server_version \"{version_text}\", which is not a PostgreSQL version number",
                conn.endpoint
            )));
        };
        conn.server_version_num = num;
        if num < MIN_SERVER_VERSION_NUM {
            let _ = conn.send_terminate().await;
            return Err(ProtocolError::UnsupportedVersion {
                found: version_text,
                minimum: MIN_SERVER_VERSION_NUM / 10000,
            });
        }
        tracing::debug!(
            endpoint = %conn.endpoint,
            server_version = %version_text,
            tls = conn.is_tls(),
            replication,
            "connected to PostgreSQL"
        );
        Ok(conn)
    }

    /// `server_version` as a number, e.g. 150004 for 15.4.
    pub fn server_version_num(&self) -> u32 {
        self.server_version_num
    }

    /// A value the server reported with ParameterStatus (server_version, TimeZone, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// Whether the session runs over TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.transport, Transport::Tls(_))
    }

    /// Whether SCRAM authentication was bound to the TLS channel (SCRAM-SHA-256-PLUS), which
    /// proves no one in the middle terminated TLS even when the certificate was not verified.
    pub fn is_channel_bound(&self) -> bool {
        self.channel_bound
    }

    /// Whether this is a physical-replication session.
    pub fn is_replication(&self) -> bool {
        self.replication
    }

    /// The server's backend process id (for pg_stat_activity / pg_stat_replication lookups).
    pub fn backend_pid(&self) -> Option<i32> {
        self.backend_key.map(|(pid, _)| pid)
    }

    /// `host:port` or socket path this connection goes to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Runs one simple-protocol query (possibly several statements) and returns all data rows
    /// as text. A server error becomes [`ProtocolError::Server`]; the connection stays usable.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, ProtocolError> {
        self.ensure_idle()?;
        frontend::query(sql, &mut self.wbuf)
            .map_err(|e| ProtocolError::Config(format!("cannot send this query: {e} (does it contain a NUL byte?)")))?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.read_message().await? {
                Message::RowDescription(_) | Message::CommandComplete(_) | Message::EmptyQueryResponse => {}
                Message::DataRow(body) => rows.push(decode_data_row(&body)?),
                Message::ErrorResponse(body) => {
                    error = Some(server_error(
                        body.fields(),
                        Some(format!("running \"{}\" on {}", abbreviate(sql), self.endpoint)),
                    ));
                }
                Message::NoticeResponse(body) => log_notice(body.fields()),
                Message::ParameterStatus(body) => self.record_parameter(&body)?,
                Message::CopyInResponse(_) => {
                    frontend::copy_fail("pgvault's simple_query does not feed COPY FROM STDIN", &mut self.wbuf)
                        .map_err(|e| ProtocolError::Protocol(e.to_string()))?;
                    self.flush().await?;
                }
                Message::CopyOutResponse(_) | Message::CopyData(_) | Message::CopyDone => {
                    // COPY TO STDOUT output is not rows; drain it.
                }
                Message::ReadyForQuery(_) => break,
                other => return Err(unexpected(&other, "a simple query")),
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// Sends Terminate and closes the socket.
    pub async fn close(mut self) -> Result<(), ProtocolError> {
        self.send_terminate().await?;
        let _ = self.transport.shutdown().await;
        Ok(())
    }

    async fn send_terminate(&mut self) -> Result<(), ProtocolError> {
        frontend::terminate(&mut self.wbuf);
        self.flush().await
    }

    pub(crate) fn ensure_idle(&self) -> Result<(), ProtocolError> {
        if self.in_copy {
            return Err(ProtocolError::Protocol(format!(
                "the connection to {} is still inside a BASE_BACKUP stream that was dropped before it finished; open a new connection",
                self.endpoint
            )));
        }
        Ok(())
    }

    pub(crate) fn ensure_replication(&self, command: &str) -> Result<(), ProtocolError> {
        if !self.replication {
            return Err(ProtocolError::Config(format!(
                "{command} needs a replication connection: connect with replication = true"
            )));
        }
        self.ensure_idle()
    }

    pub(crate) fn describe_endpoint(&self) -> &str {
        &self.endpoint
    }

    pub(crate) fn write_buf(&mut self) -> &mut BytesMut {
        &mut self.wbuf
    }

    pub(crate) async fn flush(&mut self) -> Result<(), ProtocolError> {
        if !self.wbuf.is_empty() {
            let endpoint = &self.endpoint;
            self.transport
                .write_all(&self.wbuf)
                .await
                .map_err(|e| ProtocolError::io(format!("lost the connection to {endpoint} while sending"), e))?;
            self.wbuf.clear();
        }
        self.transport
            .flush()
            .await
            .map_err(|e| ProtocolError::io(format!("lost the connection to {} while sending", self.endpoint), e))
    }

    /// Reads the next complete backend message. Payloads are `Bytes` slices of the read buffer.
    pub(crate) async fn read_message(&mut self) -> Result<Message, ProtocolError> {
        loop {
            if let Some(message) = decode_next(&mut self.rbuf, &self.endpoint)? {
                return Ok(message);
            }
            if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
                self.rbuf.reserve(READ_CHUNK);
            }
            let n =
                self.transport.read_buf(&mut self.rbuf).await.map_err(|e| {
                    ProtocolError::io(format!("lost the connection to {} while reading", self.endpoint), e)
                })?;
            if n == 0 {
                return Err(ProtocolError::io(
                    format!(
                        "the server at {} closed the connection unexpectedly (it may have crashed, restarted, or ended this session: check its log)",
                        self.endpoint
                    ),
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
        }
    }

    fn record_parameter(
        &mut self,
        body: &postgres_protocol::message::backend::ParameterStatusBody,
    ) -> Result<(), ProtocolError> {
        let name = body
            .name()
            .map_err(|e| ProtocolError::Protocol(format!("bad ParameterStatus: {e}")))?;
        let value = body
            .value()
            .map_err(|e| ProtocolError::Protocol(format!("bad ParameterStatus: {e}")))?;
        self.parameters.insert(name.to_string(), value.to_string());
        Ok(())
    }

    /// Drains messages up to ReadyForQuery after an error, so the session can be reused.
    pub(crate) async fn drain_to_ready(&mut self) -> Result<(), ProtocolError> {
        loop {
            match self.read_message().await? {
                Message::ReadyForQuery(_) => return Ok(()),
                Message::NoticeResponse(body) => log_notice(body.fields()),
                _ => {}
            }
        }
    }

    async fn startup(&mut self, params: &ConnParams) -> Result<(), ProtocolError> {
        let database = params.dbname.clone().unwrap_or_else(|| params.user.clone());
        let mut startup: Vec<(&str, &str)> = vec![
            ("user", &params.user),
            ("database", &database),
            ("application_name", &params.application_name),
            ("client_encoding", "UTF8"),
        ];
        if self.replication {
            startup.push(("replication", "true"));
        }
        frontend::startup_message(startup, &mut self.wbuf).map_err(|e| {
            ProtocolError::Config(format!(
                "cannot send the startup message: {e} (user, database and application_name must not contain NUL bytes)"
            ))
        })?;
        self.flush().await?;
        self.authenticate(params).await?;
        loop {
            match self.read_message().await? {
                Message::ParameterStatus(body) => self.record_parameter(&body)?,
                Message::BackendKeyData(body) => self.backend_key = Some((body.process_id(), body.secret_key())),
                Message::NoticeResponse(body) => log_notice(body.fields()),
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(body) => {
                    return Err(server_error(
                        body.fields(),
                        Some(format!(
                            "starting a session as user \"{}\" at {}",
                            params.user, self.endpoint
                        )),
                    ))
                }
                other => return Err(unexpected(&other, "session start-up")),
            }
        }
    }

    fn password<'p>(&self, params: &'p ConnParams) -> Result<&'p str, ProtocolError> {
        params
            .password
            .as_deref()
            .ok_or_else(|| ProtocolError::PasswordRequired {
                user: params.user.clone(),
                host: self.endpoint.clone(),
            })
    }

    async fn send_password(&mut self, password: &[u8]) -> Result<(), ProtocolError> {
        frontend::password_message(password, &mut self.wbuf).map_err(|e| {
            ProtocolError::Config(format!("cannot send the password: {e} (does it contain a NUL byte?)"))
        })?;
        self.flush().await
    }

    async fn authenticate(&mut self, params: &ConnParams) -> Result<(), ProtocolError> {
        let context = format!("authenticating as user \"{}\" at {}", params.user, self.endpoint);
        loop {
            match self.read_message().await? {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    let pw = self.password(params)?;
                    self.send_password(pw.as_bytes()).await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let pw = self.password(params)?;
                    let hash = md5_hash(params.user.as_bytes(), pw.as_bytes(), body.salt());
                    self.send_password(hash.as_bytes()).await?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = Vec::new();
                    let mut iter = body.mechanisms();
                    while let Some(m) = iter
                        .next()
                        .map_err(|e| ProtocolError::Protocol(format!("bad SASL mechanism list: {e}")))?
                    {
                        mechanisms.push(m.to_string());
                    }
                    let offers_plus = mechanisms.iter().any(|m| m == "SCRAM-SHA-256-PLUS");
                    if !offers_plus && !mechanisms.iter().any(|m| m == "SCRAM-SHA-256") {
                        return Err(ProtocolError::Auth(format!(
                            "the server at {} offers SASL mechanisms {mechanisms:?}, but pgvault only speaks SCRAM-SHA-256",
                            self.endpoint
                        )));
                    }
                    let pw = self.password(params)?.to_string();
                    let (mechanism, binding) = match (&self.end_point_hash, offers_plus) {
                        (Some(hash), true) => {
                            ("SCRAM-SHA-256-PLUS", ChannelBinding::tls_server_end_point(hash.clone()))
                        }
                        // On TLS but the server does not offer binding: say we could have ('y'),
                        // so a server that does support it detects a stripped offer.
                        (_, false) if self.is_tls() => ("SCRAM-SHA-256", ChannelBinding::unrequested()),
                        _ => ("SCRAM-SHA-256", ChannelBinding::unsupported()),
                    };
                    self.scram(&pw, mechanism, binding, &context).await?;
                    self.channel_bound = mechanism == "SCRAM-SHA-256-PLUS";
                }
                Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential
                | Message::AuthenticationGss
                | Message::AuthenticationSspi
                | Message::AuthenticationGssContinue(_) => {
                    return Err(ProtocolError::Auth(format!(
                        "the server at {} asks user \"{}\" for Kerberos/GSSAPI/SSPI authentication, which pgvault does not support: use scram-sha-256 (or md5/password, cert over TLS) for this user in pg_hba.conf",
                        self.endpoint, params.user
                    )));
                }
                Message::ErrorResponse(body) => {
                    return Err(add_auth_hint(server_error(body.fields(), Some(context))));
                }
                Message::NoticeResponse(body) => log_notice(body.fields()),
                other => return Err(unexpected(&other, "authentication")),
            }
        }
    }

    async fn scram(
        &mut self,
        password: &str,
        mechanism: &str,
        binding: ChannelBinding,
        context: &str,
    ) -> Result<(), ProtocolError> {
        let mut scram = ScramSha256::new(password.as_bytes(), binding);
        frontend::sasl_initial_response(mechanism, scram.message(), &mut self.wbuf)
            .map_err(|e| ProtocolError::Auth(format!("cannot build the SCRAM message: {e}")))?;
        self.flush().await?;
        loop {
            match self.read_message().await? {
                Message::AuthenticationSaslContinue(body) => {
                    scram.update(body.data()).map_err(|e| {
                        ProtocolError::Auth(format!("SCRAM exchange with {} failed: {e}", self.endpoint))
                    })?;
                    frontend::sasl_response(scram.message(), &mut self.wbuf)
                        .map_err(|e| ProtocolError::Auth(format!("cannot build the SCRAM message: {e}")))?;
                    self.flush().await?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    return scram.finish(body.data()).map_err(|e| {
                        ProtocolError::Auth(format!(
                            "the server at {} could not prove it knows the password of user \"{}\" (SCRAM server signature: {e}); something may be impersonating it",
                            self.endpoint, self.user
                        ))
                    });
                }
                Message::ErrorResponse(body) => {
                    return Err(add_auth_hint(server_error(body.fields(), Some(context.to_string()))));
                }
                Message::NoticeResponse(body) => log_notice(body.fields()),
                other => return Err(unexpected(&other, "SCRAM authentication")),
            }
        }
    }
}

/// Opens the socket and, for TCP, negotiates TLS per sslmode.
async fn open_transport(params: &ConnParams) -> Result<Transport, ProtocolError> {
    let endpoint = params.endpoint();
    if params.is_unix_socket() {
        let stream = UnixStream::connect(&endpoint).await.map_err(|e| {
            ProtocolError::io(
                format!("cannot connect to PostgreSQL's Unix socket {endpoint} (is the server running, with this port and unix_socket_directories?)"),
                e,
            )
        })?;
        return Ok(Transport::Unix(stream));
    }
    let tcp = tcp_connect(params).await?;
    if params.sslmode == SslMode::Disable {
        return Ok(Transport::Tcp(tcp));
    }
    match negotiate_tls(tcp, params).await {
        Ok(t) => Ok(t),
        Err(e @ ProtocolError::Tls(_)) if params.sslmode == SslMode::Prefer => {
            tracing::warn!("{e}; sslmode=prefer, so retrying {endpoint} without TLS");
            Ok(Transport::Tcp(tcp_connect(params).await?))
        }
        Err(e) => Err(e),
    }
}

async fn tcp_connect(params: &ConnParams) -> Result<TcpStream, ProtocolError> {
    let host = params.host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((host, params.port)).await.map_err(|e| {
        ProtocolError::io(
            format!(
                "cannot connect to PostgreSQL at {} (is it running and listening there? check host, port, listen_addresses and firewalls)",
                params.endpoint()
            ),
            e,
        )
    })?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

async fn negotiate_tls(mut tcp: TcpStream, params: &ConnParams) -> Result<Transport, ProtocolError> {
    let endpoint = params.endpoint();
    let mut buf = BytesMut::with_capacity(8);
    frontend::ssl_request(&mut buf);
    tcp.write_all(&buf)
        .await
        .map_err(|e| ProtocolError::io(format!("lost the connection to {endpoint} while requesting TLS"), e))?;
    // Read exactly one byte: anything after it must come from inside TLS.
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(|e| {
        ProtocolError::io(
            format!("lost the connection to {endpoint} while waiting for its TLS answer"),
            e,
        )
    })?;
    match answer[0] {
        b'S' => {}
        b'N' => {
            return if params.sslmode == SslMode::Prefer {
                tracing::debug!("{endpoint} does not offer TLS; continuing in plain text (sslmode=prefer)");
                Ok(Transport::Tcp(tcp))
            } else {
                Err(ProtocolError::Tls(format!(
                    "the server at {endpoint} does not accept TLS (ssl = off there) but sslmode={} demands it: turn ssl on in postgresql.conf, or lower sslmode",
                    params.sslmode
                )))
            };
        }
        b'E' => {
            return Err(ProtocolError::Protocol(format!(
                "the server at {endpoint} answered the TLS request with an error; it is too old or not PostgreSQL"
            )))
        }
        other => {
            return Err(ProtocolError::Protocol(format!(
                "the server at {endpoint} answered the TLS request with byte {other:#04x}; is this a PostgreSQL server?"
            )))
        }
    }
    let config = tls::client_config(params.sslmode, params.sslrootcert.as_deref())?;
    let name = tls::server_name(&params.host)?;
    let stream = TlsConnector::from(config).connect(name, tcp).await.map_err(|e| {
        let advice = match params.sslmode {
            SslMode::VerifyFull => format!(
                "the server certificate must chain to a CA in {} and name \"{}\" (DNS name or IP address SAN)",
                params
                    .sslrootcert
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "~/.postgresql/root.crt or the public web roots".into()),
                params.host
            ),
            SslMode::VerifyCa => format!(
                "the server certificate must chain to a CA in {}",
                params
                    .sslrootcert
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "~/.postgresql/root.crt or the public web roots".into()),
            ),
            _ => "check the server's ssl_cert_file/ssl_key_file and its log".into(),
        };
        ProtocolError::Tls(format!(
            "TLS handshake with {endpoint} failed (sslmode={}): {e}; {advice}",
            params.sslmode
        ))
    })?;
    Ok(Transport::Tls(Box::new(stream)))
}

/// Takes the next complete backend message off `rbuf`, `None` if more bytes are needed.
///
/// A length field beyond [`MAX_MESSAGE_LEN`] is refused before `Message::parse` sees it, because
/// that function reserves the claimed length up front: a hostile 4 GiB claim must not allocate.
pub(crate) fn decode_next(rbuf: &mut BytesMut, endpoint: &str) -> Result<Option<Message>, ProtocolError> {
    // Read the length as PostgreSQL's unsigned 32-bit field ourselves: `Header::parse` rejects a
    // length that is negative as an i32, which would skip this check while `Message::parse`
    // still reserves it.
    if let Some(&[tag, a, b, c, d]) = rbuf.get(..5) {
        let len = u32::from_be_bytes([a, b, c, d]) as usize;
        if len > MAX_MESSAGE_LEN {
            return Err(ProtocolError::Protocol(format!(
                "the server at {endpoint} announced a message of {len} bytes (tag {:?}), more than PostgreSQL ever sends; is this really a PostgreSQL server?",
                tag as char
            )));
        }
    }
    Message::parse(rbuf).map_err(|e| ProtocolError::Protocol(format!("cannot decode a message from {endpoint}: {e}")))
}

/// Decodes a DataRow into text columns (NULL as `None`).
pub(crate) fn decode_data_row(body: &DataRowBody) -> Result<Vec<Option<String>>, ProtocolError> {
    let buf = body.buffer();
    let mut ranges = body.ranges();
    let mut row = Vec::new();
    while let Some(range) = ranges
        .next()
        .map_err(|e| ProtocolError::Protocol(format!("malformed DataRow: {e}")))?
    {
        row.push(match range {
            None => None,
            Some(r) => Some(
                String::from_utf8(buf[r].to_vec())
                    .map_err(|_| ProtocolError::Protocol("a DataRow column is not valid UTF-8".into()))?,
            ),
        });
    }
    Ok(row)
}

/// Column names of a RowDescription.
pub(crate) fn column_names(body: &RowDescriptionBody) -> Result<Vec<String>, ProtocolError> {
    let mut fields = body.fields();
    let mut names = Vec::new();
    while let Some(f) = fields
        .next()
        .map_err(|e| ProtocolError::Protocol(format!("malformed RowDescription: {e}")))?
    {
        names.push(f.name().to_string());
    }
    Ok(names)
}

/// Builds [`ProtocolError::Server`] from ErrorResponse fields.
pub(crate) fn server_error(mut fields: ErrorFields<'_>, context: Option<String>) -> ProtocolError {
    let mut severity = None;
    let mut severity_localized = None;
    let mut code = String::new();
    let mut message = String::new();
    let mut detail = None;
    let mut hint = None;
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'V' => severity = Some(value),
            b'S' => severity_localized = Some(value),
            b'C' => code = value,
            b'M' => message = value,
            b'D' => detail = Some(value),
            b'H' => hint = Some(value),
            _ => {}
        }
    }
    ProtocolError::Server {
        severity: severity.or(severity_localized).unwrap_or_else(|| "ERROR".into()),
        code,
        message,
        detail,
        hint,
        context,
    }
}

/// Adds our own advice to authentication failures the server left without a hint.
fn add_auth_hint(err: ProtocolError) -> ProtocolError {
    match err {
        ProtocolError::Server {
            severity,
            code,
            message,
            detail,
            hint: None,
            context,
        } => {
            let hint = match code.as_str() {
                "28P01" => Some("check the password given by the config's password_file, PGPASSWORD, or ~/.pgpass (PGPASSFILE), and the role's password on the server".to_string()),
                "28000" if message.contains("channel binding") => Some("the TLS session the server sees is not the one pgvault sees: a TLS-terminating proxy or an interceptor sits in between; connect to the server directly".to_string()),
                "28000" if message.contains("pg_hba.conf") => Some("pg_hba.conf on the server has no line letting this user in from here: add one (replication connections need 'replication' in its database column; hostssl lines need sslmode other than disable)".to_string()),
                _ => None,
            };
            ProtocolError::Server {
                severity,
                code,
                message,
                detail,
                hint,
                context,
            }
        }
        other => other,
    }
}

/// Logs a NoticeResponse at a level matching its severity.
pub(crate) fn log_notice(fields: ErrorFields<'_>) {
    if let ProtocolError::Server {
        severity,
        code,
        message,
        detail,
        hint,
        ..
    } = server_error(fields, None)
    {
        match severity.as_str() {
            "WARNING" => tracing::warn!(%code, ?detail, ?hint, "server: {message}"),
            "DEBUG" | "LOG" => tracing::debug!(%code, "server: {message}"),
            _ => tracing::info!(%code, ?detail, ?hint, "server: {message}"),
        }
    }
}

pub(crate) fn unexpected(message: &Message, during: &str) -> ProtocolError {
    ProtocolError::Protocol(format!("{} during {during}", message_name(message)))
}

fn message_name(message: &Message) -> &'static str {
    match message {
        Message::AuthenticationOk => "AuthenticationOk",
        Message::BackendKeyData(_) => "BackendKeyData",
        Message::CommandComplete(_) => "CommandComplete",
        Message::CopyData(_) => "CopyData",
        Message::CopyDone => "CopyDone",
        Message::CopyInResponse(_) => "CopyInResponse",
        Message::CopyOutResponse(_) => "CopyOutResponse",
        Message::DataRow(_) => "DataRow",
        Message::EmptyQueryResponse => "EmptyQueryResponse",
        Message::ErrorResponse(_) => "ErrorResponse",
        Message::NoticeResponse(_) => "NoticeResponse",
        Message::NotificationResponse(_) => "NotificationResponse",
        Message::ParameterStatus(_) => "ParameterStatus",
        Message::ReadyForQuery(_) => "ReadyForQuery",
        Message::RowDescription(_) => "RowDescription",
        _ => "another message",
    }
}

fn abbreviate(sql: &str) -> String {
    let one_line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 80 {
        let cut: String = one_line.chars().take(77).collect();
        format!("{cut}...")
    } else {
        one_line
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::BufMut;

    /// Frames a backend message.
    pub(crate) fn frame(tag: u8, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u8(tag);
        b.put_u32(body.len() as u32 + 4);
        b.put_slice(body);
        b
    }

    pub(crate) fn data_row(cols: &[Option<&[u8]>]) -> BytesMut {
        let mut body = BytesMut::new();
        body.put_u16(cols.len() as u16);
        for c in cols {
            match c {
                None => body.put_i32(-1),
                Some(v) => {
                    body.put_i32(v.len() as i32);
                    body.put_slice(v);
                }
            }
        }
        frame(b'D', &body)
    }

    #[test]
    fn decodes_data_rows() {
        let mut buf = data_row(&[Some(b"0/3000028"), None, Some(b"")]);
        let Some(Message::DataRow(body)) = Message::parse(&mut buf).unwrap() else {
            panic!("not a DataRow")
        };
        assert_eq!(
            decode_data_row(&body).unwrap(),
            vec![Some("0/3000028".to_string()), None, Some(String::new())]
        );
        let mut bad = data_row(&[Some(&[0xff, 0xfe])]);
        let Some(Message::DataRow(body)) = Message::parse(&mut bad).unwrap() else {
            panic!("not a DataRow")
        };
        assert!(decode_data_row(&body).is_err());
    }

    #[test]
    fn decodes_error_responses() {
        let body = b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user \"u\"\0\0";
        let mut buf = frame(b'E', body);
        let Some(Message::ErrorResponse(body)) = Message::parse(&mut buf).unwrap() else {
            panic!("not an ErrorResponse")
        };
        let err = add_auth_hint(server_error(body.fields(), Some("authenticating".into())));
        match &err {
            ProtocolError::Server {
                severity,
                code,
                message,
                hint,
                ..
            } => {
                assert_eq!(severity, "FATAL");
                assert_eq!(code, "28P01");
                assert!(message.contains("password authentication failed"));
                assert!(hint.as_deref().unwrap().contains("PGPASSWORD"));
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("pgpass"), "{err}");
    }

    #[test]
    fn abbreviates_long_sql() {
        assert_eq!(abbreviate("SELECT\n  1"), "SELECT 1");
        assert_eq!(abbreviate(&"x".repeat(200)).chars().count(), 80);
    }
}
