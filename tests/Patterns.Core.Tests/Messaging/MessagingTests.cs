using System.Buffers;
using System.Text.Json.Serialization;
using Patterns.Messaging;
using Patterns.Serialization;

namespace Patterns.Core.Tests.Messaging;

[MessageName("billing.invoice-issued")]
public sealed record InvoiceIssued(string InvoiceId, decimal Total);

public sealed record Unnamed(int X);

[JsonSerializable(typeof(InvoiceIssued))]
internal sealed partial class TestJsonContext : JsonSerializerContext;

public sealed class MessageTypeRegistryTests
{
    [Fact]
    public void GetName_UsesAttributeThenFullName()
    {
        var registry = new MessageTypeRegistry();

        registry.GetName<InvoiceIssued>().Should().Be("billing.invoice-issued");
        registry.GetName<Unnamed>().Should().Be(typeof(Unnamed).FullName);
        registry.TryGetType("billing.invoice-issued", out var type).Should().BeTrue();
        type.Should().Be<InvoiceIssued>();
    }

    [Fact]
    public void Register_NameTakenByAnotherType_ThrowsNamingBoth()
    {
        var registry = new MessageTypeRegistry();
        registry.Register(typeof(Unnamed), "shared");

        var act = () => registry.Register(typeof(InvoiceIssued), "shared");

        act.Should().Throw<InvalidOperationException>().WithMessage($"*'shared'*{typeof(Unnamed).FullName}*{typeof(InvoiceIssued).FullName}*");
    }
}

public sealed class JsonMessageSerializerTests
{
    [Fact]
    public void RoundTrip_WithSourceGeneratedContext_ReturnsEqualMessage()
    {
        var serializer = new JsonMessageSerializer(TestJsonContext.Default);
        var buffer = new ArrayBufferWriter<byte>();

        serializer.Serialize(buffer, new InvoiceIssued("i-1", 12.5m), typeof(InvoiceIssued));
        var back = serializer.Deserialize(buffer.WrittenMemory, typeof(InvoiceIssued));

        back.Should().Be(new InvoiceIssued("i-1", 12.5m));
        serializer.ContentType.Should().Be("application/json");
    }

    [Fact]
    public void Deserialize_Malformed_ThrowsNamingTypeAndSize()
    {
        var serializer = new JsonMessageSerializer(TestJsonContext.Default);

        var act = () => serializer.Deserialize("{\"invoiceId\": 5"u8.ToArray(), typeof(InvoiceIssued));

        act.Should().Throw<MessageDeserializationException>().WithMessage($"The payload (15 bytes) is not valid JSON for message type '{typeof(InvoiceIssued).FullName}'*");
    }

    [Fact]
    public void Deserialize_TypeUnknownToContext_ThrowsWithFix()
    {
        var serializer = new JsonMessageSerializer(TestJsonContext.Default);

        var act = () => serializer.Deserialize("{}"u8.ToArray(), typeof(Unnamed));

        act.Should().Throw<MessageDeserializationException>().WithMessage("*[JsonSerializable(typeof(Unnamed))]*");
    }

    [Fact]
    public void Deserialize_JsonNull_Throws()
    {
        var act = () => new JsonMessageSerializer().Deserialize("null"u8.ToArray(), typeof(Unnamed));

        act.Should().Throw<MessageDeserializationException>().WithMessage("*JSON null*");
    }
}

public sealed class EnvelopeTests
{
    [Fact]
    public void WithHeader_ReturnsCopyAndLeavesOriginalUnchanged()
    {
        var original = new Envelope { MessageId = Guid.NewGuid(), Body = 1 };

        var changed = original.WithHeader("a", "1").WithHeader("b", "2");

        original.Headers.Should().BeNull();
        changed.TryGetHeader("a", out var a).Should().BeTrue();
        a.Should().Be("1");
        changed.Headers.Should().HaveCount(2);
        changed.MessageId.Should().Be(original.MessageId);
    }

    [Fact]
    public void MessageIds_AreUniqueAcrossThreads()
    {
        var ids = new System.Collections.Concurrent.ConcurrentBag<Guid>();
        Parallel.For(0, 8, _ =>
        {
            for (var i = 0; i < 10_000; i++)
            {
                ids.Add(MessageIds.Next());
            }
        });

        ids.Distinct().Should().HaveCount(80_000);
    }
}

/// <summary>The JSON serializer keeps a writer per thread: a message serialized while another is (by a converter) gets its own.</summary>
public sealed class JsonMessageSerializerWriterTests
{
    internal static readonly JsonMessageSerializer Shared = new();

    [Fact]
    public void AMessageSerializedWithinAnother_AndOneAfterIt_EachGetTheirOwnBytes()
    {
        var outer = new ArrayBufferWriter<byte>();
        var after = new ArrayBufferWriter<byte>();

        Shared.Serialize(outer, new Wrapper("outer", new Wrapper("inner", null)), typeof(Wrapper));
        Shared.Serialize(after, new Wrapper("after", null), typeof(Wrapper));

        System.Text.Encoding.UTF8.GetString(outer.WrittenSpan).Should().Be("\"outer{\\u0022inner{}\\u0022}\"");
        System.Text.Encoding.UTF8.GetString(after.WrittenSpan).Should().Be("\"after{}\"");
    }

    [Fact]
    public void AMessageThatFailsToSerialize_LeavesTheNextOneWhole()
    {
        var failed = new ArrayBufferWriter<byte>();
        var next = new ArrayBufferWriter<byte>();

        var act = () => Shared.Serialize(failed, new Wrapper("fail", null), typeof(Wrapper));
        act.Should().Throw<InvalidOperationException>();
        Shared.Serialize(next, new Wrapper("next", null), typeof(Wrapper));

        System.Text.Encoding.UTF8.GetString(next.WrittenSpan).Should().Be("\"next{}\"");
    }

    [Fact]
    public void TheWriterKeptByTheThread_DoesNotKeepTheCallersBufferAlive()
    {
        var buffer = SerializeIntoBufferNobodyKeeps();

        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();

        buffer.IsAlive.Should().BeFalse("a large message's buffer must not live on with the thread's writer until its next message");
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static WeakReference SerializeIntoBufferNobodyKeeps()
    {
        var buffer = new ArrayBufferWriter<byte>(1024 * 1024);
        Shared.Serialize(buffer, new Wrapper("big", null), typeof(Wrapper));
        return new WeakReference(buffer);
    }
}

/// <summary>Written as a string: its name, then its inner value serialized by the same serializer within the converter.</summary>
[JsonConverter(typeof(WrapperConverter))]
public sealed record Wrapper(string Name, Wrapper? Inner);

public sealed class WrapperConverter : JsonConverter<Wrapper>
{
    public override Wrapper Read(ref System.Text.Json.Utf8JsonReader reader, Type typeToConvert, System.Text.Json.JsonSerializerOptions options) =>
        throw new NotSupportedException();

    public override void Write(System.Text.Json.Utf8JsonWriter writer, Wrapper value, System.Text.Json.JsonSerializerOptions options)
    {
        if (value.Name == "fail")
        {
            writer.WriteStartObject();
            throw new InvalidOperationException("fails halfway");
        }

        var inner = new ArrayBufferWriter<byte>();
        if (value.Inner is not null)
        {
            JsonMessageSerializerWriterTests.Shared.Serialize(inner, value.Inner, typeof(Wrapper));
        }

        writer.WriteStringValue(value.Name + "{" + System.Text.Encoding.UTF8.GetString(inner.WrittenSpan) + "}");
    }
}
