using Patterns.Conformance;
using Patterns.InMemory;
using Patterns.Transport;

namespace Patterns.Core.Tests.InMemory;

public sealed class InMemoryTransportConformanceTests : TransportConformanceTests
{
    protected override ValueTask<MessageTransport> CreateTransportAsync() =>
        new(InMemoryTransport.Create(new InMemoryTransportOptions { MaxPayloadBytes = 64 * 1024 }));
}
