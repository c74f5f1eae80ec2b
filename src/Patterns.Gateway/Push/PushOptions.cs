using System.ComponentModel.DataAnnotations;

namespace Patterns.Gateway;

/// <summary>What happens when a push client reads more slowly than messages arrive and its buffer is full.</summary>
public enum SlowClientPolicy
{
    /// <summary>The oldest buffered message is dropped to make room; the client sees a gap in event ids.</summary>
    DropOldest,

    /// <summary>The client is disconnected; it reconnects with its last event id and resumes from the topic's replay buffer.</summary>
    Disconnect,
}

/// <summary>Options of a push endpoint (Server-Sent Events, WebSocket or long polling).</summary>
public sealed class PushOptions
{
    /// <summary>Gets or sets how many messages one connection buffers while its client is slow.</summary>
    /// <value>The default is 256.</value>
    [Range(1, 1_000_000)]
    public int BufferCapacity { get; set; } = 256;

    /// <summary>Gets or sets what happens when a connection's buffer is full.</summary>
    /// <value>The default is <see cref="SlowClientPolicy.DropOldest"/>.</value>
    public SlowClientPolicy SlowClient { get; set; } = SlowClientPolicy.DropOldest;

    /// <summary>Gets or sets how long a long-poll request is held when no message is waiting; it then answers 204.</summary>
    /// <value>The default is 30 seconds.</value>
    public TimeSpan LongPollTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Gets or sets the most messages one long-poll answer carries.</summary>
    /// <value>The default is 100.</value>
    [Range(1, 10_000)]
    public int LongPollMaxBatch { get; set; } = 100;

    /// <summary>
    /// Gets or sets how long a push connection may stay silent.
    /// Server-Sent Events: after an interval without a message the connection gets a comment line (<c>: keep-alive</c>), so
    /// proxies and load balancers keep it open and a dead client is found. A client whose pending write makes no progress
    /// for a whole interval (a dead peer, or one that stopped reading while its socket buffers are full) is disconnected, so
    /// it holds no memory or connection slot; other clients are not affected. Measured with the host's <see cref="TimeProvider"/>.
    /// WebSocket: after an interval without a frame from the client the server sends a Ping frame, and a client that does not
    /// answer with a Pong within <see cref="KeepAliveTimeout"/> is disconnected (browsers answer pings by themselves).
    /// </summary>
    /// <value>The default is 15 seconds; <see langword="null"/> turns keep-alives and stalled-client detection off.</value>
    public TimeSpan? KeepAliveInterval { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>
    /// Gets or sets how long a WebSocket client has to answer the server's keep-alive Ping with a Pong before it is
    /// disconnected, freeing its buffer and its connection slot. Applies while <see cref="KeepAliveInterval"/> is set.
    /// Measured by the runtime's WebSocket (wall-clock time, not the host's <see cref="TimeProvider"/>).
    /// </summary>
    /// <value>The default is 15 seconds.</value>
    public TimeSpan KeepAliveTimeout { get; set; } = TimeSpan.FromSeconds(15);

    internal void Validate(string pattern)
    {
        if (BufferCapacity < 1 || LongPollMaxBatch < 1 || LongPollTimeout <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(PushOptions), $"PushOptions of '{pattern}': BufferCapacity ({BufferCapacity}) and LongPollMaxBatch ({LongPollMaxBatch}) must be at least 1 and LongPollTimeout ({LongPollTimeout}) positive.");
        }

        if (KeepAliveInterval is { } keepAlive && keepAlive <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(PushOptions), $"PushOptions of '{pattern}': KeepAliveInterval ({keepAlive}) must be positive, or null to turn keep-alives off.");
        }

        if (KeepAliveTimeout <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(PushOptions), $"PushOptions of '{pattern}': KeepAliveTimeout ({KeepAliveTimeout}) must be positive.");
        }
    }
}

/// <summary>Options shared by every push endpoint of a gateway.</summary>
public sealed class PushHubOptions
{
    /// <summary>Gets or sets how many recent messages each topic keeps so that a client can resume by its last event id.</summary>
    /// <value>The default is 1024.</value>
    [Range(0, 1_000_000)]
    public int ReplayCount { get; set; } = 1024;

    /// <summary>Gets or sets the most push connections open at once; past it new ones are answered 503.</summary>
    /// <value>The default is 10,000.</value>
    [Range(1, int.MaxValue)]
    public int MaxConnections { get; set; } = 10_000;
}
