using System.Buffers;
using Grpc.Core;

namespace Patterns.PeerLinks.Wire;

/// <summary>
/// One gRPC message on a link: many frames packed into a pooled buffer of at most <see cref="MaxBytes"/> bytes,
/// so that no buffer in the transport reaches the large-object heap (85,000 bytes).
/// </summary>
internal sealed class FrameBatch
{
    /// <summary>The largest gRPC message a link sends or accepts.</summary>
    public const int MaxBytes = 64 * 1024;

    private bool _pooled = true;

    private FrameBatch(byte[] buffer) => Buffer = buffer;

    public byte[] Buffer { get; private set; }

    public int Length { get; set; }

    public ReadOnlySpan<byte> Span => Buffer.AsSpan(0, Length);

    public static readonly Marshaller<FrameBatch> Marshaller = Marshallers.Create<FrameBatch>(Serialize, Deserialize);

    public static FrameBatch Rent() => new(ArrayPool<byte>.Shared.Rent(MaxBytes));

    /// <summary>Wraps bytes that are not pooled (tests that send what a well-behaved node never would).</summary>
    internal static FrameBatch Wrap(byte[] bytes) => new(bytes) { Length = bytes.Length, _pooled = false };

    public void Return()
    {
        var buffer = Buffer;
        Buffer = [];
        Length = 0;
        if (buffer.Length > 0 && _pooled)
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static void Serialize(FrameBatch batch, SerializationContext context)
    {
        context.SetPayloadLength(batch.Length);
        var writer = context.GetBufferWriter();
        batch.Span.CopyTo(writer.GetSpan(batch.Length));
        writer.Advance(batch.Length);
        context.Complete();
    }

    private static FrameBatch Deserialize(DeserializationContext context)
    {
        var payload = context.PayloadAsReadOnlySequence();
        if (payload.Length > MaxBytes)
        {
            throw new MalformedFrameException($"a gRPC message of {payload.Length} bytes exceeds the link's limit of {MaxBytes} bytes");
        }

        var batch = Rent();
        payload.CopyTo(batch.Buffer);
        batch.Length = (int)payload.Length;
        return batch;
    }
}

/// <summary>Bytes on a link that do not follow the link protocol; the link that carried them is closed.</summary>
internal sealed class MalformedFrameException : Exception
{
    public MalformedFrameException()
    {
    }

    public MalformedFrameException(string message)
        : base(message)
    {
    }

    public MalformedFrameException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
