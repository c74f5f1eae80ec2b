using Patterns.Conformance;
using Patterns.Transport;

namespace Patterns.PeerLinks.Tests;

/// <summary>The transport conformance suite, unchanged, across three nodes linked on loopback in this process.</summary>
public sealed class PeerLinksConformanceTests : TransportConformanceTests
{
    protected override TimeSpan WaitTimeout => TimeSpan.FromSeconds(30);

    protected override async ValueTask<MessageTransport> CreateTransportAsync() => new MeshTransport(await Mesh.StartAsync(3));
}
