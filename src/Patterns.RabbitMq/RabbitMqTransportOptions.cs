using System.ComponentModel.DataAnnotations;
using RabbitMQ.Client;

namespace Patterns.RabbitMq;

/// <summary>Options for the RabbitMQ transport.</summary>
/// <remarks>
/// Validated when the host starts (every problem is reported at once). Names of exchanges and queues on the
/// broker are the logical names used by the application with <see cref="NamePrefix"/> in front.
/// </remarks>
public sealed class RabbitMqTransportOptions
{
    /// <summary>Gets or sets the broker address, for example <c>amqp://guest:guest@localhost:5672/</c> (<c>amqps://</c> for TLS).</summary>
    /// <value>Required; no default.</value>
    [Required]
    public Uri? Uri { get; set; }

    /// <summary>Gets or sets the connection name shown in the broker's management tools.</summary>
    /// <value>Default: the entry assembly's name.</value>
    public string? ClientName { get; set; }

    /// <summary>Gets or sets the most unacknowledged messages the broker pushes to one subscription before the ones it has are settled.</summary>
    /// <value>
    /// Default 256. A subscription's own <c>Capacity</c> lowers it, and its <c>Concurrency</c> raises it, so every worker has
    /// a message to work on.
    /// </value>
    [Range(1, ushort.MaxValue)]
    public int PrefetchCount { get; set; } = 256;

    /// <summary>Gets or sets a value indicating whether a send or publish completes only once the broker confirmed it (publisher confirms).</summary>
    /// <value>
    /// Default <see langword="true"/>. Without confirms a send completes once written to the socket, so a message can be lost
    /// in a broker crash, and a publish nobody subscribes to reports <see langword="true"/>. Sends to queues are still
    /// mandatory: one to a queue that does not exist completes, and the broker's return is logged as an error afterwards.
    /// </value>
    public bool PublisherConfirms { get; set; } = true;

    /// <summary>Gets or sets a value indicating whether exchanges and queues are durable, so they survive a broker restart.</summary>
    /// <value>Default <see langword="true"/>.</value>
    public bool Durable { get; set; } = true;

    /// <summary>Gets or sets a value indicating whether messages are persistent (written to disk), so messages in durable queues survive a broker restart.</summary>
    /// <value>Default <see langword="true"/>.</value>
    public bool PersistentMessages { get; set; } = true;

    /// <summary>Gets or sets the prefix of every exchange and queue name on the broker, so that several applications or environments can share one virtual host.</summary>
    /// <value>Default empty.</value>
    public string NamePrefix { get; set; } = string.Empty;

    /// <summary>Gets or sets the name of the topic exchange that carries every pub/sub topic (after <see cref="NamePrefix"/>).</summary>
    /// <value>Default <c>patterns.topics</c>.</value>
    [Required]
    public string TopicExchange { get; set; } = "patterns.topics";

    /// <summary>
    /// Gets the delays the broker can wait before a redelivery. Each delay gets its own retry queue per queue, whose
    /// messages expire after that delay back into the queue (no broker plug-in). A requested delay is rounded up to the
    /// next delay in this list, and capped at the largest.
    /// </summary>
    /// <value>Default 250 ms, 1 s, 5 s, 30 s, 1 min, 5 min, 15 min and 1 h.</value>
    public IList<TimeSpan> RetryDelays { get; } =
    [
        TimeSpan.FromMilliseconds(250),
        TimeSpan.FromSeconds(1),
        TimeSpan.FromSeconds(5),
        TimeSpan.FromSeconds(30),
        TimeSpan.FromMinutes(1),
        TimeSpan.FromMinutes(5),
        TimeSpan.FromMinutes(15),
        TimeSpan.FromHours(1),
    ];

    /// <summary>Gets or sets how long a send or publish waits for a lost connection to come back (and the first connection to open) before it fails with <see cref="Transport.TransportUnavailableException"/>.</summary>
    /// <value>Default 30 seconds. The caller's cancellation token can end the wait sooner.</value>
    public TimeSpan ReconnectTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Gets or sets how long to wait between attempts to reconnect.</summary>
    /// <value>Default 1 second.</value>
    public TimeSpan NetworkRecoveryInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Gets or sets the heartbeat interval the client asks for, so a dead connection is noticed even when the network does not close it.</summary>
    /// <value>Default 30 seconds.</value>
    public TimeSpan Heartbeat { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Gets or sets the largest serialized message body accepted, in bytes.</summary>
    /// <value>Default 4 MiB. The broker's own limit (<c>max_message_size</c>, 128 MiB by default) must not be lower.</value>
    [Range(1, 512 * 1024 * 1024)]
    public int MaxPayloadBytes { get; set; } = 4 * 1024 * 1024;

    /// <summary>Gets or sets how many channels publish in parallel. Messages with the same partition key always go through the same channel, so they keep their order.</summary>
    /// <value>Default 2.</value>
    [Range(1, 64)]
    public int PublisherChannels { get; set; } = 2;

    /// <summary>
    /// Gets or sets a value indicating whether queues are declared with single active consumer: only one consumer of a queue
    /// receives messages at a time and another takes over when it goes away. This keeps partition-key order across
    /// processes, at the cost of competing consumers.
    /// </summary>
    /// <value>Default <see langword="false"/>: consumers of one queue compete, and order per partition key holds within one subscription only.</value>
    public bool SingleActiveConsumer { get; set; }

    /// <summary>
    /// Gets or sets how long a pub/sub consumer group's queue stays on the broker once no consumer uses it. A consumer
    /// group is a durable queue that keeps collecting its topics while nobody consumes it, also after the code that
    /// declared it is gone (a renamed group leaves its old queue behind, filling up). With an expiry, the broker deletes
    /// the group's queue and its retry queue (<c>x-expires</c>) after they had no consumer for this long, with the
    /// messages in them.
    /// </summary>
    /// <value>
    /// Default <see langword="null"/>: groups stay until deleted. Must be longer than any time the group's consumers are
    /// expected to be away (a deployment, an outage), or their messages are deleted with the queue. Point-to-point queues
    /// and request queues never expire.
    /// </value>
    public TimeSpan? ConsumerGroupExpiry { get; set; }

    /// <summary>Gets or sets a callback that adjusts the RabbitMQ.Client connection factory (TLS, credentials, endpoints) after the options above are applied.</summary>
    /// <value>Default <see langword="null"/>.</value>
    public Action<ConnectionFactory>? ConfigureConnectionFactory { get; set; }

    /// <summary>
    /// For tests: called before a message is handed back to its retry or delay queue. Returning <see langword="false"/>
    /// makes it as if the broker refused the copy (a negative confirm); throwing, as if the publish failed.
    /// </summary>
    internal Func<Patterns.Messaging.Envelope, bool>? RedeliveryFault { get; set; }
}
