using System.ComponentModel.DataAnnotations;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;

namespace Patterns.PeerLinks;

/// <summary>Options of one peer-link node: where it listens, which peers it links to, and how links behave.</summary>
public sealed class PeerLinksOptions
{
    /// <summary>Gets or sets this node's name, unique among its peers; it appears in logs and membership events.</summary>
    /// <value>Default: the machine name and a random suffix.</value>
    public string NodeId { get; set; } = $"{Environment.MachineName}-{Guid.NewGuid().ToString("N")[..8]}";

    /// <summary>Gets or sets where this node listens for its peers' links (HTTP/2). Use port 0 for an ephemeral port; <c>https</c> needs <see cref="ServerCertificate"/>.</summary>
    /// <value>Default <c>http://127.0.0.1:0</c>.</value>
    [Required]
    public Uri ListenUri { get; set; } = new("http://127.0.0.1:0");

    /// <summary>Gets the peers this node links to. Every node links to every other node it sends to (a full mesh).</summary>
    /// <value>Default empty.</value>
    public IList<Uri> Peers { get; } = [];

    /// <summary>
    /// Gets or sets the secret every node of the mesh shares. A link proves it with an HMAC-SHA256 of its node id and
    /// incarnation; a listener refuses (and logs) a link without the right proof. Use it together with TLS, which
    /// keeps the proof from being read off the wire.
    /// </summary>
    /// <value>Default <see langword="null"/>: links are not authenticated by a secret.</value>
    public string? SharedSecret { get; set; }

    /// <summary>Gets or sets the certificate this node's listener presents (TLS); required when <see cref="ListenUri"/> is <c>https</c>.</summary>
    /// <value>Default <see langword="null"/>.</value>
    public X509Certificate2? ServerCertificate { get; set; }

    /// <summary>Gets or sets the certificate this node presents when it dials an <c>https</c> peer (mutual TLS).</summary>
    /// <value>Default <see langword="null"/>.</value>
    public X509Certificate2? ClientCertificate { get; set; }

    /// <summary>Gets or sets a value indicating whether the listener refuses a TLS link without a client certificate that <see cref="ValidateCertificate"/> accepts.</summary>
    /// <value>Default <see langword="false"/>.</value>
    public bool RequireClientCertificate { get; set; }

    /// <summary>
    /// Gets or sets how both ends judge the other's certificate. Typical meshes pin their own certificate authority here.
    /// </summary>
    /// <value>Default <see langword="null"/>: the platform's chain validation.</value>
    public Func<X509Certificate2, X509Chain?, SslPolicyErrors, bool>? ValidateCertificate { get; set; }

    /// <summary>Gets or sets how often a link proves it is alive when it has nothing else to say.</summary>
    /// <value>Default 1 second.</value>
    public TimeSpan HeartbeatInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Gets or sets how long a link may stay silent before it is taken as broken and dialled again.</summary>
    /// <value>Default 5 seconds.</value>
    public TimeSpan HeartbeatTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Gets or sets how long a broken link may take to come back before its peer is declared down: its consumers are
    /// then forgotten and messages that were in flight to it are delivered again to another consumer. A refused
    /// connection (nothing listens any more) declares the peer down at once.
    /// </summary>
    /// <value>Default 10 seconds.</value>
    public TimeSpan ReconnectGrace { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Gets or sets the first reconnect delay; each attempt doubles it, with jitter, up to <see cref="MaxReconnectDelay"/>.</summary>
    /// <value>Default 20 ms.</value>
    public TimeSpan FirstReconnectDelay { get; set; } = TimeSpan.FromMilliseconds(20);

    /// <summary>Gets or sets the longest reconnect delay.</summary>
    /// <value>Default 2 seconds.</value>
    public TimeSpan MaxReconnectDelay { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// Gets or sets the bytes each link keeps sent but unacknowledged: the send window and the replay buffer at once.
    /// Senders wait while it is full, so memory never grows past it; a reconnect replays it, so nothing inside it is
    /// lost or duplicated. A message larger than the window is admitted alone.
    /// </summary>
    /// <value>Default 4 MiB (at least 1 MiB).</value>
    [Range(1024 * 1024, int.MaxValue)]
    public int ReplayBufferBytes { get; set; } = 4 * 1024 * 1024;

    /// <summary>Gets or sets the largest payload a message may have; bigger ones fail at the sender with <see cref="Transport.MessageTooLargeException"/>. Messages travel in chunks of 32 KiB.</summary>
    /// <value>Default 16 MiB.</value>
    [Range(1, int.MaxValue)]
    public int MaxMessageBytes { get; set; } = 16 * 1024 * 1024;

    /// <summary>Gets or sets how long announcing a subscription to the peers, or draining a stopped one, may take.</summary>
    /// <value>Default 10 seconds.</value>
    public TimeSpan AnnounceTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Gets or sets the credit of a temporary subscription (a reply queue): how many messages each peer may have in
    /// flight to it. Other subscriptions grant their <see cref="Transport.SubscriptionRequest.Concurrency"/> plus
    /// <see cref="Prefetch"/>.
    /// </summary>
    /// <value>Default 256.</value>
    [Range(1, 65_536)]
    public int TemporaryCredit { get; set; } = 256;

    /// <summary>
    /// Gets or sets how many messages, beyond its <see cref="Transport.SubscriptionRequest.Concurrency"/>, a subscription
    /// lets each peer have in flight to it (never more than its <see cref="Transport.SubscriptionRequest.Capacity"/>).
    /// They wait on the subscribing node, so a sender keeps the link busy instead of waiting a round trip per message;
    /// settlements flow back in batches. A subscription of concurrency 1 gets no prefetch, so it sees a queue strictly in
    /// send order; with prefetch (concurrency above 1) order is kept per partition key. 0 turns prefetch off.
    /// </summary>
    /// <value>Default 64.</value>
    [Range(0, 65_536)]
    public int Prefetch { get; set; } = 64;

    /// <summary>
    /// Gets or sets how often peers named as services are resolved again through service discovery while the node runs:
    /// an endpoint that appears is linked, one that disappears is unlinked (its messages in flight are delivered again,
    /// and it leaves <see cref="PeerMembership.Peers"/> after a last <see cref="PeerState.Down"/> event). Unused without
    /// service discovery.
    /// </summary>
    /// <value>Default 30 seconds.</value>
    public TimeSpan DiscoveryRefreshInterval { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Gets or sets the highest link protocol this node speaks (<see cref="Wire.LinkProtocol"/>); always the current one
    /// outside tests, which set an older one to check that nodes of different versions link.
    /// </summary>
    internal int Protocol { get; set; } = Wire.LinkProtocol.Current;
}
