namespace Patterns.Transport;

/// <summary>Whether an address names a queue or a topic.</summary>
public enum AddressKind
{
    /// <summary>A point-to-point queue: each message reaches exactly one consumer.</summary>
    Queue,

    /// <summary>A pub/sub topic (or topic pattern with <c>*</c> and <c>#</c> wildcards): each message reaches every subscription.</summary>
    Topic,
}

/// <summary>A place messages are sent to or consumed from.</summary>
/// <param name="Kind">Queue or topic.</param>
/// <param name="Name">The queue name, or the topic (pattern).</param>
public readonly record struct TransportAddress(AddressKind Kind, string Name)
{
    /// <summary>Creates a queue address.</summary>
    /// <param name="name">The queue name.</param>
    /// <returns>The address.</returns>
    public static TransportAddress Queue(string name) => new(AddressKind.Queue, name);

    /// <summary>Creates a topic address.</summary>
    /// <param name="name">The topic or topic pattern.</param>
    /// <returns>The address.</returns>
    public static TransportAddress Topic(string name) => new(AddressKind.Topic, name);

    /// <inheritdoc />
    public override string ToString() => $"{(Kind == AddressKind.Queue ? "queue" : "topic")}:{Name}";
}
