namespace Patterns.Gateway.Push;

/// <summary>One message of a topic as push clients see it: a per-topic event id and the JSON body, serialized once for every client.</summary>
internal sealed record PushMessage(long Id, string Topic, ReadOnlyMemory<byte> Data)
{
    /// <summary>The keep-alive an idle Server-Sent Events connection is offered; recognized by reference.</summary>
    public static readonly PushMessage KeepAlive = new(0, string.Empty, ReadOnlyMemory<byte>.Empty);
}
